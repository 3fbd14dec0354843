"""Contained resources and local references (https://hl7.org/fhir/R4B/references.html#contained):
the dom-2, dom-3, dom-4 and ref-1 invariants, checked in Python while the validator walks a
resource, since their FHIRPath forms scan every descendant of the resource once per
contained resource.

- dom-2: a contained resource holds no contained resources;
- dom-3: each contained resource is referenced (`#id`) from the container or from another
  contained resource, or refers to its container (`#`);
- dom-4: no `meta.versionId` or `meta.lastUpdated` in a contained resource;
- contained ids are present and unique;
- ref-1: every `#id` reference resolves to a contained resource (`#` alone, only from inside a
  contained resource, points at the container).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LocalReferences"]

_DOM_2 = (
    "dom-2: If the resource is contained in another resource, it SHALL NOT contain nested Resources"
)
_DOM_3 = (
    "dom-3: If the resource is contained in another resource, it SHALL be referred to from "
    "elsewhere in the resource or SHALL refer to the containing resource"
)
_DOM_4 = (
    "dom-4: If a resource is contained in another resource, it SHALL NOT have a "
    "meta.versionId or a meta.lastUpdated"
)
_REF_1 = "ref-1: SHALL have a contained resource if a local reference is provided"


@dataclass(slots=True)
class LocalReferences:
    """The local references of one resource and its contained resources, collected during
    the walk; `problems` then checks them against the contained resources."""

    references: list[tuple[str, str, bool]] = field(default_factory=list)  # (ref, where, inside)
    targets: set[str] = field(default_factory=set)  # every `#...` value (dom-3 reads uris too)
    refers_to_container: set[int] = field(default_factory=set)  # indexes of contained
    inside: int | None = None  # the index of the contained resource being walked

    def reference(self, value: str, location: str) -> None:
        """A `Reference.reference` starting with `#`."""
        self.references.append((value, location, self.inside is not None))
        self.uri(value)

    def uri(self, value: str) -> None:
        """A canonical, uri or url (or reference) value starting with `#`."""
        self.targets.add(value)
        if value == "#" and self.inside is not None:
            self.refers_to_container.add(self.inside)

    def problems(self, resource: dict[str, Any], location: str) -> list[tuple[str, str]]:
        """(location, message) of each problem of `resource`'s contained resources and
        local references."""
        found: list[tuple[str, str]] = []
        contained = resource.get("contained")
        ids: dict[str, int] = {}
        if type(contained) is list:
            for index, item in enumerate(contained):
                if type(item) is not dict:
                    continue
                where = f"{location}.contained[{index}]"
                found.extend(self._contained(item, index, where, ids))
        for value, where, inside in self.references:
            if value == "#":
                if not inside:
                    found.append(
                        (
                            where,
                            f"{_REF_1}: '#' refers to the container, so only a "
                            "contained resource may use it",
                        )
                    )
            elif value[1:] not in ids:
                found.append((where, f"{_REF_1}: no contained resource has the id {value[1:]!r}"))
        return found

    def _contained(
        self, item: dict[str, Any], index: int, where: str, ids: dict[str, int]
    ) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if "contained" in item:
            found.append((f"{where}.contained", _DOM_2))
        meta = item.get("meta")
        if type(meta) is dict:
            for name in ("versionId", "lastUpdated"):
                if name in meta:
                    found.append((f"{where}.meta.{name}", _DOM_4))
        resource_id = item.get("id")
        if not isinstance(resource_id, str):
            found.append((where, "a contained resource needs an id"))
            return found
        first = ids.setdefault(resource_id, index)
        if first != index:
            found.append(
                (f"{where}.id", f"the id {resource_id!r} is already used by contained[{first}]")
            )
        elif f"#{resource_id}" not in self.targets and index not in self.refers_to_container:
            found.append((where, f"{_DOM_3} (nothing refers to #{resource_id})"))
        return found
