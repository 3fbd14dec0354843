"""Checks shared by the interactions: known types, ids, If-Match, conditional matching."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from cmfhir.errors import BadRequest, NotFound, PreconditionFailed
from cmfhir.interactions.context import FhirContext
from cmfhir.resources.fhir_versions import check_type_in_version
from cmfhir.resources.types import is_resource_type
from cmfhir.search.parse import parse_search
from cmfhir.store import Repository

__all__ = [
    "advisory_key",
    "check_id",
    "check_if_match",
    "match",
    "parse_etag",
    "parse_version",
    "require_type",
]

_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# [0-9], not \d: `\d` and str.isdigit() take digits int() refuses (`²`).
_ETAG_RE = re.compile(r'^(?:W/)?"?([0-9]+)"?$')
# Versions are PostgreSQL integers.
_MAX_VERSION = 2**31 - 1


def require_type(resource_type: str, version: str | None = None) -> None:
    """404 for a type cmfhir does not serve; with the request's FHIR `version` ("4.0",
    "4.3"), also for a type of the other version only."""
    if not is_resource_type(resource_type):
        raise NotFound(f"Unknown resource type '{resource_type}'", expression=[resource_type])
    if version is not None:
        check_type_in_version(resource_type, version)


def check_id(id: str) -> None:
    if not _ID_RE.match(id):
        raise BadRequest(f"'{id}' is not a valid resource id ([A-Za-z0-9-.]{{1,64}})")


def parse_version(text: str) -> int | None:
    """A version id (`3`) as a number; None when no resource can have it (not decimal
    digits, or past the integer range versions are stored in)."""
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0")
    if len(digits) > len(str(_MAX_VERSION)):
        return None
    number = int(digits or "0")
    return number if number <= _MAX_VERSION else None


def parse_etag(value: str) -> int | None:
    """`W/"3"` (or `"3"`, `3`) → 3; None for a version no resource can have."""
    found = _ETAG_RE.match(value.strip())
    if not found:
        raise BadRequest(f"If-Match '{value}' is not a version ETag like W/\"3\"")
    return parse_version(found.group(1))


def check_if_match(if_match: str | None, current_version: int, resource: str) -> None:
    if if_match is not None and parse_etag(if_match) != current_version:
        raise PreconditionFailed(
            f"{resource} is at version {current_version}, not the version If-Match names "
            f"({if_match.strip()})"
        )


async def match(
    ctx: FhirContext, repo: Repository, resource_type: str, query: str, *, limit: int = 2
) -> list[tuple[str, str]]:
    """The resources a conditional interaction's search selects: up to `limit` (id, content).

    Unknown parameters are errors here: ignoring one would widen the match and touch
    resources the client never meant.
    """
    params = parse_qsl(query, keep_blank_values=True)
    if not params:
        raise BadRequest(f"The conditional search for {resource_type} has no criteria")
    request = parse_search(ctx.registry, resource_type, params, strict=True)
    if not request.criteria:
        raise BadRequest(f"The conditional search '{query}' has no criteria")
    request.count = limit
    request.sort = []
    page = await repo.search(request, count_up_to=0)
    return [(id, content) for _, id, content in page.matches]


def advisory_key(resource_type: str, query: str) -> str:
    return resource_type + "?" + "&".join(sorted(query.split("&")))
