"""Fixtures for the hardening tests: a known Patient that every test reads afterwards, so
a request that breaks the server fails the test that sent it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture(scope="module")
def sentinel(client: httpx.Client) -> str:
    """A Patient every test reads afterwards: the server still answers, and still has it."""
    response = client.post(
        "Patient", json={"resourceType": "Patient", "name": [{"family": "Sentinel"}]}
    )
    assert response.status_code == 201, response.text
    id: str = response.json()["id"]
    return id


@pytest.fixture(autouse=True)
def still_healthy(client: httpx.Client, sentinel: str) -> Iterator[None]:
    yield
    response = client.get(f"Patient/{sentinel}")
    assert response.status_code == 200, response.text
    assert response.json()["name"] == [{"family": "Sentinel"}]
