"""Diff the FHIR R4 (4.0.1) and R4B (4.3.0) core definitions and record what differs.

Reads the StructureDefinitions, ValueSets, CodeSystems and SearchParameters of the npm
packages `hl7.fhir.r4.examples` 4.0.1 (which carries R4's core definitions) and
`hl7.fhir.r4b.core` 4.3.0, and writes:

- `profiles/r4/differences.json`: for every resource type cmfhir lists (and every complex
  datatype), the types that exist in only one version, elements added or removed,
  cardinality, type, binding, reference-target and constraint differences, and search
  parameters that exist in only one version.
- `profiles/r4/required-bindings.json`: R4's required bindings of `code` elements with
  enumerated value sets, in the format of `profiles/required-bindings.json` (which holds R4B's).

`docs/fhir-versions.md` explains the result. Without `--r4`/`--r4b` the packages are fetched
with `npm pack` into `.data/fhir-packages/` (the npm registry only).

    .venv/bin/python scripts/diff_r4_r4b.py [--r4 DIR_OR_TGZ] [--r4b DIR_OR_TGZ] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

PACKAGES = {
    "r4": ("hl7.fhir.r4.examples", "4.0.1"),
    "r4b": ("hl7.fhir.r4b.core", "4.3.0"),
}
CACHE = ROOT / ".data" / "fhir-packages"
SD = "http://hl7.org/fhir/StructureDefinition/"

Json = dict[str, Any]


def listed_types() -> frozenset[str]:
    """cmfhir's resource types (resources/types.py), read without importing the package."""
    spec = importlib.util.spec_from_file_location(
        "cmfhir_types", ROOT / "src" / "cmfhir" / "resources" / "types.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    types: frozenset[str] = module.RESOURCE_TYPES
    return types


# --- reading the packages -------------------------------------------------------------------


def package_dir(given: str | None, key: str) -> Path:
    """The unpacked `package/` folder: given as a folder or a .tgz, else `npm pack`ed."""
    name, version = PACKAGES[key]
    if given is None:
        CACHE.mkdir(parents=True, exist_ok=True)
        tgz = CACHE / f"{name}-{version}.tgz"
        if not tgz.exists():
            subprocess.run(["npm", "pack", f"{name}@{version}"], cwd=CACHE, check=True)
        source = tgz
    else:
        source = Path(given)
    if source.is_dir():
        return source / "package" if (source / "package").is_dir() else source
    target = CACHE / f"{name}-{version}"
    if not (target / "package" / "package.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(source) as archive:
            archive.extractall(target, filter="data")
    return target / "package"


class Package:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.structures: dict[str, Json] = {}
        self.value_sets: dict[str, Json] = {}
        self.code_systems: dict[str, Json] = {}
        self.search_parameters: dict[str, Json] = {}
        for path in sorted(folder.glob("*.json")):
            prefix = path.name.split("-", 1)[0]
            if prefix not in ("StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter"):
                continue
            item = json.loads(path.read_text(encoding="utf-8"))
            kind = item.get("resourceType")
            if kind == "StructureDefinition" and item.get("url") == SD + item.get("type", ""):
                self.structures[item["type"]] = item
            elif kind == "ValueSet":
                self.value_sets[item["url"]] = item
            elif kind == "CodeSystem":
                self.code_systems[item["url"]] = item
            elif kind == "SearchParameter":
                self.search_parameters[item["url"]] = item

    def resource_types(self) -> set[str]:
        return {
            name
            for name, sd in self.structures.items()
            if sd["kind"] == "resource" and not sd.get("abstract")
        }

    def datatypes(self) -> set[str]:
        return {name for name, sd in self.structures.items() if sd["kind"] == "complex-type"}

    def expand(self, url: str, seen: frozenset[str] = frozenset()) -> set[str] | None:
        """The codes of a value set, or None when its definition does not enumerate them
        (filters other than whole-system inclusion, or systems outside the package)."""
        url = url.split("|")[0]
        value_set = self.value_sets.get(url)
        if value_set is None or url in seen:
            return None
        compose = value_set.get("compose", {})
        codes: set[str] = set()
        for include in compose.get("include", []):
            found = self._include(include, seen | {url})
            if found is None:
                return None
            codes |= found
        for exclude in compose.get("exclude", []):
            found = self._include(exclude, seen | {url})
            if found is None:
                return None
            codes -= found
        return codes or None

    def _include(self, include: Json, seen: frozenset[str]) -> set[str] | None:
        codes: set[str] | None = None
        if "system" in include:
            if include.get("filter"):
                return None
            if "concept" in include:
                codes = {concept["code"] for concept in include["concept"]}
            else:
                system = self.code_systems.get(include["system"])
                if system is None or "concept" not in system:
                    return None
                codes = set(_concept_codes(system["concept"]))
        for url in include.get("valueSet", []):
            found = self.expand(url, seen)
            if found is None:
                return None
            codes = found if codes is None else codes & found
        return codes


def _concept_codes(concepts: Iterable[Json]) -> Iterable[str]:
    for concept in concepts:
        yield concept["code"]
        yield from _concept_codes(concept.get("concept", []))


# --- one element, as compared -----------------------------------------------------------------


def _bare(url: str) -> str:
    url = url.split("|")[0]
    return url[len(SD) :] if url.startswith(SD) else url


def _element(element: Json) -> Json:
    types = []
    targets: set[str] = set()
    for item in element.get("type", []):
        code = item["code"]
        if code.startswith("http://hl7.org/fhirpath/System."):
            code = "System." + code.rsplit(".", 1)[1]
        types.append(code)
        targets.update(_bare(url) for url in item.get("targetProfile", []))
    binding = element.get("binding")
    return {
        "min": element.get("min"),
        "max": element.get("max"),
        "types": sorted(types),
        "contentReference": element.get("contentReference"),
        "targets": sorted(targets),
        "binding": None
        if binding is None
        else {
            "strength": binding.get("strength"),
            "valueSet": binding.get("valueSet", "").split("|")[0] or None,
        },
        "constraints": {
            constraint["key"]: {
                "severity": constraint.get("severity"),
                "expression": constraint.get("expression"),
            }
            for constraint in element.get("constraint", [])
        },
    }


def _elements(sd: Json) -> dict[str, Json]:
    return {element["path"]: _element(element) for element in sd["snapshot"]["element"]}


# --- the diff -----------------------------------------------------------------------------------


def diff_structure(name: str, r4: Package, r4b: Package) -> Json:
    old = _elements(r4.structures[name])
    new = _elements(r4b.structures[name])
    result: Json = {
        "elementsOnlyInR4": sorted(set(old) - set(new)),
        "elementsOnlyInR4B": sorted(set(new) - set(old)),
        "cardinality": [],
        "types": [],
        "bindings": [],
        "targets": [],
        "constraints": [],
    }
    for path in sorted(set(old) & set(new)):
        a, b = old[path], new[path]
        if (a["min"], a["max"]) != (b["min"], b["max"]):
            result["cardinality"].append(
                {"path": path, "r4": f"{a['min']}..{a['max']}", "r4b": f"{b['min']}..{b['max']}"}
            )
        if a["types"] != b["types"] or a["contentReference"] != b["contentReference"]:
            result["types"].append(
                {
                    "path": path,
                    "r4": a["types"] or [a["contentReference"]],
                    "r4b": b["types"] or [b["contentReference"]],
                }
            )
        if a["targets"] != b["targets"]:
            result["targets"].append(
                {
                    "path": path,
                    "onlyInR4": sorted(set(a["targets"]) - set(b["targets"])),
                    "onlyInR4B": sorted(set(b["targets"]) - set(a["targets"])),
                }
            )
        binding = _binding_difference(path, a, b, r4, r4b)
        if binding is not None:
            result["bindings"].append(binding)
        for key in sorted(set(a["constraints"]) | set(b["constraints"])):
            ca, cb = a["constraints"].get(key), b["constraints"].get(key)
            if ca != cb and _is_own(path, key):
                result["constraints"].append({"path": path, "key": key, "r4": ca, "r4b": cb})
    return {key: value for key, value in result.items() if value}


_INHERITED = {"ele": "Element", "ext": "Extension", "dom": "DomainResource"}


def _is_own(path: str, key: str) -> bool:
    # ele-*, ext-* and dom-* are repeated on every element, extension and resource of every
    # structure; they are reported once, on Element, Extension and DomainResource themselves.
    owner = _INHERITED.get(key.split("-", 1)[0])
    return owner is None or path.split(".", 1)[0] == owner


def _binding_difference(path: str, a: Json, b: Json, r4: Package, r4b: Package) -> Json | None:
    ba, bb = a["binding"], b["binding"]
    codes_a = codes_b = None
    if ba is not None and ba["strength"] == "required" and ba["valueSet"]:
        codes_a = r4.expand(ba["valueSet"])
    if bb is not None and bb["strength"] == "required" and bb["valueSet"]:
        codes_b = r4b.expand(bb["valueSet"])
    codes_differ = codes_a is not None and codes_b is not None and codes_a != codes_b
    if ba == bb and not codes_differ:
        return None
    entry: Json = {"path": path, "r4": ba, "r4b": bb}
    if codes_a is not None and codes_b is not None:
        entry["codesOnlyInR4"] = sorted(codes_a - codes_b)
        entry["codesOnlyInR4B"] = sorted(codes_b - codes_a)
    return entry


def diff_search_parameters(r4: Package, r4b: Package, types: set[str]) -> Json:
    def by_base(package: Package) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for parameter in package.search_parameters.values():
            for base in parameter.get("base", []):
                if base in types:
                    found.setdefault(base, set()).add(parameter["code"])
        return found

    old, new = by_base(r4), by_base(r4b)
    result: Json = {}
    for name in sorted(set(old) | set(new)):
        only_r4 = sorted(old.get(name, set()) - new.get(name, set()))
        only_r4b = sorted(new.get(name, set()) - old.get(name, set()))
        if only_r4 or only_r4b:
            result[name] = {"onlyInR4": only_r4, "onlyInR4B": only_r4b}
    return result


def required_bindings(package: Package, version: str) -> Json:
    """Required bindings of `code` elements whose value set is enumerated, by path."""
    bindings: Json = {}
    for name in sorted(package.structures):
        sd = package.structures[name]
        if sd["kind"] not in ("resource", "complex-type"):
            continue
        for element in sd["snapshot"]["element"]:
            binding = element.get("binding", {})
            codes_of_type = [item["code"] for item in element.get("type", [])]
            if binding.get("strength") != "required" or codes_of_type != ["code"]:
                continue
            if not element["path"].startswith(name + "."):
                continue  # inherited from a base (Resource.language is not required)
            url = binding.get("valueSet", "").split("|")[0]
            codes = package.expand(url) if url else None
            if codes:
                bindings[element["path"]] = {"valueSet": url, "codes": sorted(codes)}
    return {
        "description": f"Required bindings of FHIR {version} code elements with enumerated "
        "value sets (derived by scripts/diff_r4_r4b.py).",
        "fhirVersion": version,
        "bindings": bindings,
    }


def diff(r4: Package, r4b: Package) -> Json:
    r4_types, r4b_types = r4.resource_types(), r4b.resource_types()
    listed = set(listed_types())
    unknown = listed - r4b_types
    if unknown:
        raise SystemExit(f"cmfhir lists types R4B does not define: {sorted(unknown)}")
    resources = {
        name: found
        for name in sorted(listed & r4_types)
        if (found := diff_structure(name, r4, r4b))
    }
    datatypes = {
        name: found
        for name in sorted(r4.datatypes() & r4b.datatypes())
        if (found := diff_structure(name, r4, r4b))
    }
    for name in ("Element", "Resource", "DomainResource"):
        found = diff_structure(name, r4, r4b)
        if found:
            datatypes[name] = found
    return {
        "description": "Differences between the FHIR R4 (4.0.1) and R4B (4.3.0) core definitions "
        "for the resource types cmfhir lists and the complex datatypes (derived by "
        "scripts/diff_r4_r4b.py; explained in docs/fhir-versions.md).",
        "r4": {"package": "hl7.fhir.r4.examples", "version": "4.0.1"},
        "r4b": {"package": "hl7.fhir.r4b.core", "version": "4.3.0"},
        "resourceTypesOnlyInR4": sorted(r4_types - r4b_types),
        "resourceTypesOnlyInR4B": sorted(r4b_types - r4_types),
        "datatypesOnlyInR4": sorted(r4.datatypes() - r4b.datatypes()),
        "datatypesOnlyInR4B": sorted(r4b.datatypes() - r4.datatypes()),
        "resources": resources,
        "datatypes": datatypes,
        "searchParameters": diff_search_parameters(r4, r4b, listed & r4_types),
    }


def _write(path: Path, document: Json) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--r4", help="hl7.fhir.r4.examples 4.0.1: unpacked folder or .tgz")
    parser.add_argument("--r4b", help="hl7.fhir.r4b.core 4.3.0: unpacked folder or .tgz")
    parser.add_argument("--out", default=str(ROOT / "profiles" / "r4"))
    args = parser.parse_args()
    r4 = Package(package_dir(args.r4, "r4"))
    r4b = Package(package_dir(args.r4b, "r4b"))
    out = Path(args.out)
    _write(out / "differences.json", diff(r4, r4b))
    _write(out / "required-bindings.json", required_bindings(r4, "4.0.1"))


if __name__ == "__main__":
    main()
