"""An operation invocation as the operations see it (https://hl7.org/fhir/R4/operations.html):
where it was called (system, type or instance), and its input as a Parameters resource,
however the client sent it (query string, Parameters body, or a resource body)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cmfhir.errors import BadRequest
from cmfhir.resources.operations import Level, OperationDefinition

__all__ = ["OperationCall"]


@dataclass(frozen=True, slots=True)
class OperationCall:
    definition: OperationDefinition
    level: Level
    resource_type: str | None
    id: str | None
    parameters: dict[str, Any]  # a Parameters resource
    # The client accepts plain `application/json` rather than `application/fhir+json`
    # (`$versions` answers each differently).
    plain_json: bool = False

    @property
    def code(self) -> str:
        return self.definition.code

    def _entries(self, name: str) -> list[dict[str, Any]]:
        found = [p for p in self.parameters.get("parameter", []) if p.get("name") == name]
        declared = self.definition.parameter(name)
        if declared is not None and declared.max == "1" and len(found) > 1:
            raise BadRequest(
                f"${self.code} takes at most one '{name}' parameter", expression=[name]
            )
        return found

    def value(self, name: str) -> Any:
        """The `value[x]` of the input parameter `name`, or None."""
        for entry in self._entries(name):
            for key, value in entry.items():
                if key.startswith("value"):
                    return value
            raise BadRequest(f"Parameter '{name}' of ${self.code} has no value", expression=[name])
        return None

    def resource(self, name: str) -> dict[str, Any] | None:
        """The `resource` of the input parameter `name`, or None."""
        for entry in self._entries(name):
            resource = entry.get("resource")
            if not isinstance(resource, dict):
                raise BadRequest(
                    f"Parameter '{name}' of ${self.code} must carry a resource", expression=[name]
                )
            return resource
        return None
