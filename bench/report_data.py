"""A year of care-management activity for the report scenario (issue #15), written through
the FHIR API over a loaded caseload: qualifying and non-qualifying contacts each month by
acuity tier (most members meet their tier's requirement, some do not), a comprehensive
assessment a year, contact-satisfaction answers, and enrollment changes recorded during the
year (a tier change for one member in ten, a care-manager change for one in twenty), so that
the reports read what a real organization's year holds. Deterministic for a seed.

`python -m bench.report_data BASE_URL` (the server's /fhir base)."""

from __future__ import annotations

import asyncio
import random
import sys
from datetime import date, timedelta
from typing import Any

import httpx

from bench.caseload import AS_OF

__all__ = ["add_report_activity", "assessment_items"]

_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
_TIER = "https://cmfhir.org/fhir/StructureDefinition/acuity-tier"
_ASSESSMENT = "https://cmfhir.org/fhir/Questionnaire/comprehensive-assessment"
_SATISFACTION = "https://cmfhir.org/fhir/Questionnaire/contact-satisfaction"
_REQUIRED = {"high": 3, "moderate": 2, "low": 1}
_MONTHS = 12
_BUNDLE = 200


def _month_starts() -> list[date]:
    out, year, month = [], AS_OF.year, AS_OF.month
    for _ in range(_MONTHS):
        out.append(date(year, month, 1))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return sorted(out)


def _when(day: date, minutes: int) -> str:
    return f"{day.isoformat()}T{minutes // 60:02d}:{minutes % 60:02d}:00-05:00"


def assessment_items() -> list[dict[str, Any]]:
    """The least a completed comprehensive assessment holds (its required items); also
    used by tests/reports."""

    def answered(link_id: str, **value: Any) -> dict[str, Any]:
        return {"linkId": link_id, "answer": [value]}

    no = {"valueCoding": {"system": "http://loinc.org", "code": "LA32-8"}}
    screening = {
        "food": ["food-worry", "food-did-not-last"],
        "housing": ["housing-stayed-outside", "housing-worried-losing", "utilities-unable"],
        "transportation-group": ["transportation"],
        "safety": ["safety-unsafe", "safety-hurt"],
    }
    return [
        {
            "linkId": "physical-health",
            "item": [
                answered("overall-health", valueString="Good"),
                answered("has-pcp", valueBoolean=True),
            ],
        },
        {"linkId": "medications", "item": [answered("takes-medications", valueBoolean=False)]},
        {
            "linkId": "sdoh",
            "item": [
                {"linkId": group, "item": [answered(code, **no) for code in codes]}
                for group, codes in screening.items()
            ],
        },
    ]


def _member_activity(
    rng: random.Random, episode: dict[str, Any], managers: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The new resources of one member's year, and the enrollment's update (or None)."""
    member = episode["patient"]["reference"]
    tier = next((x["valueCode"] for x in episode.get("extension", []) if x["url"] == _TIER), "low")
    enrolled = date.fromisoformat(episode["period"]["start"][:10])
    created: list[dict[str, Any]] = []
    for month in _month_starts():
        if month < enrolled.replace(day=1):
            continue
        # Most members meet the requirement; about one month in five falls short.
        count = _REQUIRED.get(tier, 1) - (1 if rng.random() < 0.2 else 0) + rng.randint(0, 1)
        for _ in range(max(0, count)):
            day = month + timedelta(days=rng.randint(0, 27))
            medium = rng.choices(("FACE", "PHONE", "VIDEOCONF", "WRITTEN"), (3, 5, 1, 1))[0]
            created.append(
                {
                    "resourceType": "Communication",
                    "status": rng.choices(("completed", "not-done"), (9, 1))[0],
                    "subject": {"reference": member},
                    "sent": _when(day, rng.randint(8 * 60, 18 * 60)),
                    "medium": [{"coding": [{"system": _MODE, "code": medium}]}],
                    "payload": [{"contentString": "Monthly contact"}],
                }
            )
        if rng.random() < 0.25:
            day = month + timedelta(days=rng.randint(0, 27))
            created.append(
                {
                    "resourceType": "QuestionnaireResponse",
                    "questionnaire": _SATISFACTION,
                    "status": "completed",
                    "subject": {"reference": member},
                    "authored": day.isoformat(),
                    "item": [
                        {"linkId": "overall", "answer": [{"valueInteger": rng.randint(1, 5)}]}
                    ],
                }
            )
    if rng.random() < 0.85:
        day = max(enrolled, AS_OF - timedelta(days=rng.randint(0, 400)))
        created.append(
            {
                "resourceType": "QuestionnaireResponse",
                "questionnaire": _ASSESSMENT,
                "status": "completed",
                "subject": {"reference": member},
                "authored": day.isoformat(),
                "item": assessment_items(),
            }
        )
    update = None
    if rng.random() < 0.15:
        update = {k: v for k, v in episode.items() if k != "meta"}
        if rng.random() < 0.66:
            other = [t for t in _REQUIRED if t != tier]
            update["extension"] = [{"url": _TIER, "valueCode": rng.choice(other)}]
        else:
            update["careManager"] = {"reference": f"Practitioner/{rng.choice(managers)}"}
    return created, update


async def _episodes(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    url: str | None = "EpisodeOfCare?_count=1000"
    while url:
        response = await http.get(url)
        response.raise_for_status()
        page = response.json()
        found += [e["resource"] for e in page.get("entry", [])]
        url = next((x["url"] for x in page.get("link", []) if x["relation"] == "next"), None)
    return found


async def add_report_activity(base_url: str, seed: int = 1, concurrency: int = 4) -> int:
    """Write the year's activity; returns the resources written."""
    rng = random.Random(f"report-activity:{seed}")
    async with httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", timeout=600) as http:
        episodes = sorted(await _episodes(http), key=lambda e: e["id"])
        managers = sorted(
            {e["careManager"]["reference"].split("/")[1] for e in episodes if "careManager" in e}
        )
        entries: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for episode in episodes:
            created, update = _member_activity(rng, episode, managers)
            entries += [
                {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
                for r in created
            ]
            if update is not None:
                updates.append(update)
        bundles = [entries[i : i + _BUNDLE] for i in range(0, len(entries), _BUNDLE)]
        gate = asyncio.Semaphore(concurrency)

        async def send(chunk: list[dict[str, Any]]) -> None:
            async with gate:
                body = {"resourceType": "Bundle", "type": "transaction", "entry": chunk}
                response = await http.post("", json=body)
                if response.status_code != 200:
                    raise RuntimeError(f"Bundle rejected: {response.text[:1000]}")

        async def put(episode: dict[str, Any]) -> None:
            async with gate:
                response = await http.put(f"EpisodeOfCare/{episode['id']}", json=episode)
                response.raise_for_status()

        await asyncio.gather(*(send(b) for b in bundles))
        await asyncio.gather(*(put(e) for e in updates))
        return len(entries) + len(updates)


if __name__ == "__main__":
    written = asyncio.run(add_report_activity(sys.argv[1]))
    print(f"{written:,} resources written")
