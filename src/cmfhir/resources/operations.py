"""The operations cmfhir supports, read from the OperationDefinitions in `profiles/operations/`
(https://hl7.org/fhir/R4/operationdefinition.html): an operation is routed and listed in the
CapabilityStatement because its definition is there."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cmfhir.resources.types import is_resource_type

__all__ = [
    "Level",
    "OperationDefinition",
    "OperationParameter",
    "OperationRegistry",
    "load_operations",
]

Level = Literal["system", "type", "instance"]


@dataclass(frozen=True, slots=True)
class OperationParameter:
    """One `OperationDefinition.parameter`: its name, direction, cardinality and type."""

    name: str
    use: str  # "in" | "out"
    min: int
    max: str  # "1", "*"
    type: str | None  # a FHIR type name ("code", "Meta", "Resource"); None for parts

    @property
    def is_resource(self) -> bool:
        return self.type in ("Resource", "DomainResource") or (
            self.type is not None and is_resource_type(self.type)
        )


@dataclass(frozen=True, slots=True)
class OperationDefinition:
    code: str
    url: str
    name: str
    system: bool
    type: bool
    instance: bool
    resource: tuple[str, ...]  # types it applies to at type/instance level; "Resource": all
    affects_state: bool
    parameters: tuple[OperationParameter, ...]
    content: dict[str, Any] = field(repr=False, compare=False, hash=False)

    def allows(self, level: Level) -> bool:
        return {"system": self.system, "type": self.type, "instance": self.instance}[level]

    def applies_to(self, resource_type: str) -> bool:
        return "Resource" in self.resource or resource_type in self.resource

    def levels(self) -> list[Level]:
        levels: tuple[Level, ...] = ("system", "type", "instance")
        return [level for level in levels if self.allows(level)]

    def parameter(self, name: str, use: str = "in") -> OperationParameter | None:
        return next((p for p in self.parameters if p.name == name and p.use == use), None)

    def inputs(self) -> list[OperationParameter]:
        return [p for p in self.parameters if p.use == "in"]


def _definition(content: dict[str, Any], source: Path) -> OperationDefinition:
    if content.get("resourceType") != "OperationDefinition" or not content.get("code"):
        raise ValueError(f"{source} is not an OperationDefinition with a code")
    parameters = tuple(
        OperationParameter(
            name=p["name"],
            use=p["use"],
            min=int(p.get("min", 0)),
            max=str(p.get("max", "1")),
            type=p.get("type"),
        )
        for p in content.get("parameter", [])
    )
    return OperationDefinition(
        code=content["code"],
        url=content["url"],
        name=content.get("name", content["code"]),
        system=bool(content.get("system")),
        type=bool(content.get("type")),
        instance=bool(content.get("instance")),
        resource=tuple(content.get("resource", [])),
        affects_state=bool(content.get("affectsState")),
        parameters=parameters,
        content=content,
    )


class OperationRegistry:
    """The OperationDefinitions by code (`validate` for `$validate`)."""

    def __init__(self, definitions: list[OperationDefinition] | None = None) -> None:
        self._by_code = {d.code: d for d in definitions or []}

    def get(self, code: str) -> OperationDefinition | None:
        return self._by_code.get(code)

    def all(self) -> list[OperationDefinition]:
        return sorted(self._by_code.values(), key=lambda d: d.code)

    def system_level(self) -> list[OperationDefinition]:
        return [d for d in self.all() if d.system]

    def for_type(self, resource_type: str) -> list[OperationDefinition]:
        return [d for d in self.all() if (d.type or d.instance) and d.applies_to(resource_type)]


def load_operations(profiles_dir: Path) -> OperationRegistry:
    """Every `profiles/operations/*.json` OperationDefinition."""
    folder = profiles_dir / "operations"
    definitions = [
        _definition(json.loads(path.read_text(encoding="utf-8")), path)
        for path in sorted(folder.glob("*.json"))
    ]
    return OperationRegistry(definitions)
