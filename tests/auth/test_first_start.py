"""A first start (issue 12): authorization is on unless asked otherwise, and a server with
no user yet says how to create the first user and client."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from cmfhir.config import Settings


def test_authorization_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CMFHIR_AUTH", raising=False)
    assert Settings().auth == "smart"


def test_a_first_start_says_how_to_create_the_first_user_and_client(
    scratch_database: str,
    tmp_path: Path,
    start_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(
        database_url=scratch_database, data_dir=tmp_path, auth="smart", audit=False, workers=False
    )
    with caplog.at_level(logging.WARNING, logger="cmfhir"), start_server(settings):
        pass
    said = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "no user is registered yet" in said
    assert "cmfhir user add --username" in said and "cmfhir client register" in said
