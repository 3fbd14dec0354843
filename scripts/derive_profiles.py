"""Derive cmfhir's committed search definitions in `profiles/` from the FHIR R4B core package.

Reads `../shared/fhir/search-parameters.json` (the 1,426 core SearchParameters) and
`../shared/fhir/compartmentdefinition-patient.json`, keeps only what the server acts on, and
writes `profiles/search-parameters.json` and `profiles/compartmentdefinition-patient.json`
with one resource per line so that a change shows as a one-line diff. The server reads only
`profiles/` at run time. cmfhir adds to the R4B Patient compartment the types in
`COMPARTMENT_ADDITIONS` (R4B leaves them out; cmfhir treats them as the member's record).

    .venv/bin/python scripts/derive_profiles.py [--shared ../shared/fhir] [--out profiles]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEPT = (
    "resourceType",
    "id",
    "url",
    "name",
    "status",
    "description",
    "code",
    "base",
    "type",
    "expression",
    "target",
    "multipleOr",
    "multipleAnd",
    "comparator",
    "modifier",
    "component",
)
MAX_DESCRIPTION = 300
# "* [AllergyIntolerance](allergyintolerance.html): Who the sensitivity is for"
_BULLET = re.compile(r"^\* \[(\w+)\]\([^)]*\): (.*)$")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")


def trim_description(text: str) -> str:
    """Keep the first paragraph (at most MAX_DESCRIPTION characters); for the multi-base
    parameters keep one `* Type: text` line per base so /metadata can document each type."""
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    bullets = [m for m in map(_BULLET.match, lines) if m]
    if bullets:
        return "Multiple Resources:\n" + "\n".join(f"* {m[1]}: {m[2]}" for m in bullets)
    paragraph = _LINK.sub(r"\1", text.replace("\r\n", "\n").strip().split("\n\n")[0])
    paragraph = " ".join(paragraph.split())
    if len(paragraph) > MAX_DESCRIPTION:
        paragraph = paragraph[: MAX_DESCRIPTION - 1].rsplit(" ", 1)[0] + "…"
    return paragraph


def trim_search_parameter(resource: dict[str, Any]) -> dict[str, Any]:
    out = {key: resource[key] for key in KEPT if key in resource}
    out["description"] = trim_description(resource.get("description", ""))
    return out


# Resource types R4B's Patient compartment leaves out that cmfhir counts as the member's: a
# Task for the member (a survey request from the care team, a referral) is theirs to see and
# answer with a patient/ token, and only their care team's to see with a user/ token.
COMPARTMENT_ADDITIONS: dict[str, list[str]] = {"Task": ["patient"]}


def trim_compartment(resource: dict[str, Any]) -> dict[str, Any]:
    keep = ("resourceType", "id", "url", "name", "status", "code", "search")
    out = {key: resource[key] for key in keep if key in resource}
    out["resource"] = [
        {"code": entry["code"], "param": entry.get("param") or COMPARTMENT_ADDITIONS[entry["code"]]}
        for entry in resource["resource"]
        if entry.get("param") or entry["code"] in COMPARTMENT_ADDITIONS
    ]
    return out


def _line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def write_bundle(path: Path, bundle_id: str, resources: list[dict[str, Any]]) -> None:
    """A collection Bundle, one entry per line."""
    entries = ",\n".join("  " + _line({"fullUrl": r["url"], "resource": r}) for r in resources)
    head = f'{{"resourceType":"Bundle","id":"{bundle_id}","type":"collection","entry":[\n'
    path.write_text(head + entries + "\n]}\n", encoding="utf-8")


def write_compartment(path: Path, compartment: dict[str, Any]) -> None:
    """The compartment definition, one resource type per line."""
    header = {k: v for k, v in compartment.items() if k != "resource"}
    rows = ",\n".join("  " + _line(entry) for entry in compartment["resource"])
    path.write_text(_line(header)[:-1] + ',"resource":[\n' + rows + "\n]}\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "fhir")
    parser.add_argument("--out", type=Path, default=ROOT / "profiles")
    args = parser.parse_args()

    source = json.loads((args.shared / "search-parameters.json").read_text(encoding="utf-8"))
    parameters = [trim_search_parameter(entry["resource"]) for entry in source["entry"]]
    args.out.mkdir(parents=True, exist_ok=True)
    write_bundle(args.out / "search-parameters.json", "cmfhir-r4b-search-parameters", parameters)

    compartment_path = args.shared / "compartmentdefinition-patient.json"
    compartment = json.loads(compartment_path.read_text(encoding="utf-8"))
    write_compartment(
        args.out / "compartmentdefinition-patient.json", trim_compartment(compartment)
    )
    print(f"wrote {len(parameters)} search parameters and the Patient compartment to {args.out}")


if __name__ == "__main__":
    main()
