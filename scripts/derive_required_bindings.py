"""Derive profiles/required-bindings.json from the shared R4B definitions.

The source (../shared/fhir/required-bindings.json, from the hl7.fhir.r4b.core 4.3.0 package)
maps each `code` element with a required, enumerated binding to its allowed codes. The
server reads only the derived copy, never ../shared, at run time.

    .venv/bin/python scripts/derive_required_bindings.py [SOURCE]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "fhir" / "required-bindings.json"
TARGET = ROOT / "profiles" / "required-bindings.json"


def derive(source: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    bindings: dict[str, dict[str, object]] = {}
    for path, entry in sorted(source.items()):
        codes = entry["codes"]
        value_set = entry["valueSet"]
        if not (isinstance(codes, list) and codes and all(isinstance(c, str) for c in codes)):
            raise SystemExit(f"{path}: 'codes' must be a non-empty list of strings")
        if not isinstance(value_set, str):
            raise SystemExit(f"{path}: 'valueSet' must be a string")
        bindings[path] = {"valueSet": value_set, "codes": sorted(set(codes))}
    return bindings


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE
    bindings = derive(json.loads(source.read_text(encoding="utf-8")))
    document = {
        "description": "Required bindings of FHIR R4B 4.3.0 code elements with enumerated "
        "value sets (derived from hl7.fhir.r4b.core by scripts/derive_required_bindings.py).",
        "fhirVersion": "4.3.0",
        "bindings": bindings,
    }
    TARGET.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(bindings)} bindings to {TARGET}")


if __name__ == "__main__":
    main()
