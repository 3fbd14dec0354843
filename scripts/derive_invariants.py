"""Derive profiles/invariants.json and profiles/reference-targets.json from the FHIR R4B core
package (hl7.fhir.r4b.core 4.3.0).

    npm pack hl7.fhir.r4b.core@4.3.0 && tar xzf hl7.fhir.r4b.core-4.3.0.tgz
    .venv/bin/python scripts/derive_invariants.py package/

invariants.json: every `constraint` of severity `error` that a resource or datatype
StructureDefinition defines itself (a snapshot repeats `ele-1` and `ext-1` on every element;
each is kept once, on the type that defines it), keyed by element path (`Patient.contact`,
`Period`, `RiskAssessment.prediction.probability`). Those the server does not evaluate as
FHIRPath are listed under `skipped` or `native`, each with its reason: a constraint is never
dropped silently.

reference-targets.json: for each Reference (or CodeableReference) element whose
`targetProfile`s do not allow any resource, the resource types it may point to.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INVARIANTS = ROOT / "profiles" / "invariants.json"
TARGETS = ROOT / "profiles" / "reference-targets.json"
NARRATIVE = ROOT / "profiles" / "narrative-xhtml.json"
_BASE = "http://hl7.org/fhir/StructureDefinition/"

# Constraints the server checks in Python rather than as FHIRPath, and where.
NATIVE: dict[str, str] = {
    "ele-1": "resources/validation.py: the JSON walk refuses empty objects, arrays and strings, "
    "whitespace-only strings and elements holding only an id",
    "ext-1": "resources/validation.py: an extension has either a value[x] or sub-extensions, "
    "checked on every extension",
    "dom-2": "resources/contained.py: no contained resource holds contained resources",
    "dom-3": "resources/contained.py: every contained resource is referenced from the "
    "container or from another contained resource (the expression walks descendants() of "
    "the whole resource for each contained resource, too slow for every write)",
    "dom-4": "resources/contained.py: no meta.versionId or meta.lastUpdated in contained",
    "ref-1": "resources/contained.py: a local reference `#id` resolves to a contained resource",
    "txt-1": "resources/narrative.py: htmlChecks() is not FHIRPath that fhirpathpy knows; the "
    "narrative div is parsed as XML and checked against the FHIR XHTML rules",
    "txt-2": "resources/narrative.py: htmlChecks(); the narrative has non-whitespace content",
}

# Constraints not evaluated at all, and why.
SKIPPED: dict[str, str] = {}

# Functions that need what a server write does not have (profiles, terminology, other
# resources) or that no FHIRPath engine defines. (fhirpathpy lacks `hasValue()`;
# resources/invariants.py supplies it.)
UNSUPPORTED_FUNCTIONS = {
    "conformsTo(": "conformsTo() needs the StructureDefinitions of profiles",
    "memberOf(": "memberOf() needs a terminology server",
    "resolve(": "resolve() reads other resources (referential integrity is checked apart)",
    "htmlChecks(": "htmlChecks() is not implemented by fhirpathpy",
}


def _type_of(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def _element_key(path: str) -> str:
    return path.replace("[x]", "")


def _structure_definitions(package: Path) -> list[dict[str, Any]]:
    found = []
    for file in sorted(package.glob("StructureDefinition-*.json")):
        sd = json.loads(file.read_text(encoding="utf-8"))
        # Specializations, and the roots Element and Resource that have no base.
        if sd.get("derivation", "specialization") != "specialization":
            continue
        if sd.get("kind") not in ("resource", "complex-type"):
            continue
        found.append(sd)
    return found


def derive_invariants(sds: list[dict[str, Any]]) -> dict[str, Any]:
    constraints: dict[str, list[dict[str, str]]] = {}
    skipped: dict[str, dict[str, str]] = {}
    native: dict[str, dict[str, str]] = {}
    for sd in sds:
        own = sd["url"]
        for element in sd["snapshot"]["element"]:
            for constraint in element.get("constraint", ()):
                if constraint.get("severity") != "error":
                    continue
                if constraint.get("source", own) != own:
                    continue  # repeated from the type that defines it
                key = constraint["key"]
                entry = {
                    "key": key,
                    "path": _element_key(element["path"]),
                    "human": " ".join(constraint["human"].split()),
                    "expression": constraint["expression"],
                }
                if key in NATIVE:
                    native[key] = {**entry, "reason": NATIVE[key]}
                    continue
                reason = SKIPPED.get(key) or next(
                    (
                        why
                        for name, why in UNSUPPORTED_FUNCTIONS.items()
                        if name in entry["expression"]
                    ),
                    None,
                )
                if reason is not None:
                    skipped[key] = {**entry, "reason": reason}
                    continue
                constraints.setdefault(entry["path"], []).append(
                    {k: entry[k] for k in ("key", "human", "expression")}
                )
    return {
        "description": "Error-severity invariants (FHIRPath constraints) of the FHIR R4B 4.3.0 "
        "resources and datatypes, keyed by element path (derived from hl7.fhir.r4b.core by "
        "scripts/derive_invariants.py). `native` ones are checked in Python, `skipped` ones "
        "not at all; each says why.",
        "fhirVersion": "4.3.0",
        "constraints": dict(sorted(constraints.items())),
        "native": dict(sorted(native.items())),
        "skipped": dict(sorted(skipped.items())),
    }


def derive_targets(sds: list[dict[str, Any]]) -> dict[str, Any]:
    targets: dict[str, list[str]] = {}
    for sd in sds:
        for element in sd["snapshot"]["element"]:
            path = element["path"]
            if not path.startswith(sd["type"]):
                continue
            allowed: set[str] = set()
            any_type = False
            for kind in element.get("type", ()):
                if kind.get("code") not in ("Reference", "CodeableReference"):
                    continue
                profiles = kind.get("targetProfile") or [_BASE + "Resource"]
                for profile in profiles:
                    name = _type_of(profile)
                    if name in ("Resource", "DomainResource") or not profile.startswith(_BASE):
                        any_type = True
                    allowed.add(name)
            if allowed and not any_type:
                targets[_element_key(path)] = sorted(allowed)
    return {
        "description": "Resource types each Reference or CodeableReference element of FHIR "
        "R4B 4.3.0 may point to, from ElementDefinition.type.targetProfile (derived from "
        "hl7.fhir.r4b.core by scripts/derive_invariants.py). Elements that allow any resource "
        "are not listed.",
        "fhirVersion": "4.3.0",
        "targets": dict(sorted(targets.items())),
    }


def derive_narrative(sds: list[dict[str, Any]]) -> dict[str, Any]:
    """The XHTML element and attribute names txt-1 allows, read from its XPath form (the
    FHIRPath form is `htmlChecks()`, which names nothing)."""
    narrative = next(sd for sd in sds if sd["type"] == "Narrative")
    constraints = {
        c["key"]: c for e in narrative["snapshot"]["element"] for c in e.get("constraint", ())
    }
    xpath = constraints["txt-1"]["xpath"]
    elements_part, _, attributes_part = xpath.partition("/@*")
    return {
        "description": "XHTML names allowed in Narrative.div by txt-1 of FHIR R4B 4.3.0, from "
        "its XPath (derived from hl7.fhir.r4b.core by scripts/derive_invariants.py).",
        "fhirVersion": "4.3.0",
        "txt-1": constraints["txt-1"]["human"],
        "txt-2": constraints["txt-2"]["human"],
        "elements": sorted(set(re.findall(r"'([a-z0-9]+)'", elements_part))),
        "attributes": sorted(set(re.findall(r"'([a-z]+)'", attributes_part))),
    }


def _write(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sds = _structure_definitions(Path(sys.argv[1]))
    invariants = derive_invariants(sds)
    _write(INVARIANTS, invariants)
    count = sum(len(v) for v in invariants["constraints"].values())
    print(
        f"wrote {count} invariants ({len(invariants['native'])} native, "
        f"{len(invariants['skipped'])} skipped) to {INVARIANTS}"
    )
    targets = derive_targets(sds)
    _write(TARGETS, targets)
    print(f"wrote {len(targets['targets'])} reference elements to {TARGETS}")
    narrative = derive_narrative(sds)
    _write(NARRATIVE, narrative)
    print(f"wrote {len(narrative['elements'])} XHTML elements to {NARRATIVE}")


if __name__ == "__main__":
    main()
