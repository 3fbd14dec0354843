"""SMART App Launch scopes, v1 and v2, parsed into a typed form
(https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).

`patient/Observation.read` (v1) and `patient/Observation.rs` (v2) both become a
`ResourceScope` granting `r` and `s`; a v2 granular scope's query
(`?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory`) becomes
token filters. A scope that does not parse grants nothing: a granular query this server
cannot enforce (a modifier, a chain, a non-token parameter) is never widened into the scope
without it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

__all__ = [
    "PERMISSIONS",
    "Family",
    "ResourceScope",
    "TokenFilter",
    "parse_scope",
    "parse_scopes",
]

Family = Literal["patient", "user", "system"]
PERMISSIONS = "cruds"

_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(
    r"^(?P<family>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{0,63})"
    r"\.(?P<perm>[a-z*]{1,5})(?:\?(?P<query>.+))?$"
)
_PARAM = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
_URI_PREFIX = "http://smarthealthit.org/fhir/scopes/"


@dataclass(frozen=True, slots=True)
class TokenFilter:
    """`param=system|code,...`: the resource has a token value of `param` matching one of
    `values` (system None: any system; code None: any code of that system)."""

    param: str
    values: tuple[tuple[str | None, str | None], ...]


@dataclass(frozen=True, slots=True)
class ResourceScope:
    family: Family
    resource_type: str  # "*" for every type
    permissions: frozenset[str]  # letters of "cruds"
    filters: tuple[TokenFilter, ...] = ()

    def covers(self, resource_type: str | None, permission: str) -> bool:
        return permission in self.permissions and self.resource_type in ("*", resource_type)


def _permissions(text: str) -> frozenset[str] | None:
    if text in _V1:
        return frozenset(_V1[text])
    # v2: letters of "cruds", each at most once, in that order.
    position = -1
    for letter in text:
        found = PERMISSIONS.find(letter)
        if found <= position:
            return None
        position = found
    return frozenset(text)


def _token_value(text: str) -> tuple[str | None, str | None] | None:
    if not text:
        return None
    if "|" not in text:
        return None, text
    system, _, code = text.partition("|")
    if "|" in code:
        return None
    return (system or None), (code or None)


def _filters(query: str) -> tuple[TokenFilter, ...] | None:
    filters: list[TokenFilter] = []
    for part in query.split("&"):
        name, equals, raw = part.partition("=")
        if not equals or not _PARAM.match(name):
            return None  # a modifier (`:`), a chain (`.`) or no value: not enforceable here
        values: list[tuple[str | None, str | None]] = []
        for item in unquote(raw).split(","):
            value = _token_value(item)
            if value is None:
                return None
            values.append(value)
        filters.append(TokenFilter(name, tuple(values)))
    return tuple(filters)


def parse_scope(text: str) -> ResourceScope | None:
    """The resource scope `text` names, or None for any other scope (`openid`, `launch`,
    `offline_access`...) and for a resource scope that does not parse."""
    text = text.removeprefix(_URI_PREFIX)
    match = _SCOPE.match(text)
    if match is None:
        return None
    permissions = _permissions(match["perm"])
    if permissions is None:
        return None
    filters: tuple[TokenFilter, ...] = ()
    if match["query"] is not None:
        parsed = _filters(match["query"])
        if parsed is None:
            return None
        filters = parsed
    family: Family = match["family"]  # type: ignore[assignment]
    return ResourceScope(family, match["type"], permissions, filters)


def parse_scopes(scopes: Iterable[str] | str) -> tuple[ResourceScope, ...]:
    """The resource scopes among `scopes` (a space-separated string or its items)."""
    items = scopes.split() if isinstance(scopes, str) else scopes
    return tuple(s for s in (parse_scope(item) for item in items) if s is not None)
