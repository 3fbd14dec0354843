"""Helpers for the HL7 v2 tests: the shared sample messages made unique per test, and
sending over HTTP."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "hl7v2"
if not SAMPLES.is_dir():  # a worktree under /work/wt/<branch>
    SAMPLES = Path("/work/shared/data/hl7v2")
EXPECTED = SAMPLES / "expected_fhir_ms_converter"

# The identifiers the samples use, made unique per test so tests share one database.
_KEYS = ("PATID1234", "10006579", "MRN12345", "40007716", "MSG00001", "599102", "1270326314")


def tag() -> str:
    return uuid.uuid4().hex[:10]


def sample(name: str, unique: str, **replace: str) -> str:
    text = (SAMPLES / name).read_text(encoding="utf-8")
    for key in _KEYS:
        text = text.replace(key, f"{key}{unique}")
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


def segments(ack: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for segment in ack.strip("\r").split("\r"):
        fields = segment.split("|")
        out[fields[0]] = fields
    return out


def post(client: httpx.Client, message: str, **headers: str) -> httpx.Response:
    root = str(client.base_url).rstrip("/").removesuffix("/fhir")
    return client.post(
        f"{root}/hl7v2",
        content=message.encode("utf-8"),
        headers={"Content-Type": "x-application/hl7-v2+er7", **headers},
    )


def search(client: httpx.Client, query: str) -> list[dict[str, Any]]:
    bundle = client.get(query).json()
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
