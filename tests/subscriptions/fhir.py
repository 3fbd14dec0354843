"""Writing the resources the subscription tests need, over HTTP."""

from __future__ import annotations

from typing import Any

import httpx


async def patient_(http: httpx.AsyncClient) -> str:
    response = await http.post(
        "/Patient", json={"resourceType": "Patient", "name": [{"family": "Doe"}]}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def encounter(
    http: httpx.AsyncClient, patient: str, status: str = "in-progress", class_: str = "IMP"
) -> str:
    body = {
        "resourceType": "Encounter",
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class_},
        "subject": {"reference": f"Patient/{patient}"},
    }
    response = await http.post("/Encounter", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def subscribe(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await http.post("/Subscription", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
