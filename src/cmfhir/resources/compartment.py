"""The Patient compartment (https://hl7.org/fhir/R4B/compartmentdefinition-patient.html):
which members' records a resource belongs to, from the parameters the R4B
CompartmentDefinition names for its type."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cmfhir.resources.index_values import ResourceIndex, add_references
from cmfhir.resources.search_parameters import SearchParameterRegistry, load_registry

__all__ = ["PatientCompartment", "load_patient_compartment", "patient_compartment"]


@dataclass(frozen=True, slots=True)
class PatientCompartment:
    """For each resource type in the Patient compartment, the parameters that put it there."""

    params: Mapping[str, tuple[str, ...]]
    registry: SearchParameterRegistry

    def params_for(self, resource_type: str) -> tuple[str, ...]:
        return self.params.get(resource_type, ())


@lru_cache(maxsize=16)
def _load_compartment(profiles_dir: Path) -> PatientCompartment:
    path = profiles_dir / "compartmentdefinition-patient.json"
    content = json.loads(path.read_text(encoding="utf-8"))
    params = {
        entry["code"]: tuple(entry.get("param", ()))
        for entry in content.get("resource", ())
        if entry.get("param")
    }
    return PatientCompartment(params, load_registry(profiles_dir))


def load_patient_compartment(profiles_dir: Path) -> PatientCompartment:
    """The Patient CompartmentDefinition in `profiles/` (read once per directory)."""
    return _load_compartment(Path(profiles_dir).resolve())


def patient_compartment(
    resource: dict[str, Any],
    compartment: PatientCompartment,
    index: ResourceIndex | None = None,
) -> list[str]:
    """Ids of the patients whose compartment holds this resource: a Patient is in its own
    (its id comes first) and in those of the patients it links to; any other resource is in
    the compartment of each local Patient (`Patient/id`, not an absolute URL of another
    server) its compartment parameters point at. Pass the resource's `index` to reuse it."""
    resource_type = resource.get("resourceType")
    ids: list[str] = []
    if resource_type == "Patient" and isinstance(resource.get("id"), str):
        ids.append(resource["id"])
    params = compartment.params_for(str(resource_type))
    if params:
        if index is None:
            index = ResourceIndex()
            for compiled in compartment.registry.extractors(str(resource_type)):
                if compiled.parameter.code in params and compiled.parameter.type == "reference":
                    add_references(compiled.parameter.code, compiled.extract(resource), index)
        for entry in index.reference:
            if (
                entry.target_type == "Patient"
                and entry.target_id is not None
                and entry.param in params
                and "://" not in entry.url
            ):
                ids.append(entry.target_id)
    return list(dict.fromkeys(ids))
