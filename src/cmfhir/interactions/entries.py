"""Reading the entries of a transaction or batch Bundle
(https://hl7.org/fhir/R4B/http.html#transaction): method, url, resource and conditions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cmfhir.errors import BadRequest, FhirError, Issue, PayloadTooLarge

__all__ = ["Entry", "at_entry", "parse_entries", "processing_order", "split_url"]

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# The spec's processing order for a transaction.
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 3, "GET": 4, "HEAD": 4}


@dataclass(slots=True)
class Entry:
    index: int
    method: str
    resource_type: str
    id: str | None
    rest: list[str]  # path segments after type/id, e.g. ["_history", "2"]
    query: str | None
    resource: Any
    full_url: str | None
    if_none_exist: str | None
    if_match: str | None

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


def split_url(url: str, base: str) -> tuple[list[str], str | None]:
    """`Patient/1?x=y` (relative, or absolute under our base) → (["Patient", "1"], "x=y")."""
    for prefix in (base.rstrip("/") + "/", "/"):
        if url.startswith(prefix):
            url = url[len(prefix) :]
            break
    path, sep, query = url.partition("?")
    segments = [s for s in path.split("/") if s]
    return segments, (query if sep else None)


def at_entry(error: FhirError, index: int) -> FhirError:
    """The same error, its locations prefixed with the entry it came from."""
    where = f"Bundle.entry[{index}]"
    error.issues = [
        Issue(
            f"{where}: {issue.diagnostics}",
            code=issue.code,
            severity=issue.severity,
            expression=tuple(
                f"{where}.resource.{e.split('.', 1)[1]}" if "." in e else f"{where}.{e}"
                for e in issue.expression
            )
            or (where,),
        )
        for issue in error.issues
    ]
    return error


def _entry(index: int, raw: Any, base: str) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} is not an object", expression=[where])
    request = raw.get("request")
    if not isinstance(request, dict):
        raise BadRequest(f"{where} has no request", expression=[f"{where}.request"])
    method = request.get("method")
    url = request.get("url")
    if method not in METHODS:
        raise BadRequest(
            f"{where}.request.method must be one of {', '.join(METHODS)}",
            expression=[f"{where}.request.method"],
        )
    if not isinstance(url, str) or not url:
        raise BadRequest(f"{where}.request.url is missing", expression=[f"{where}.request.url"])
    segments, query = split_url(url, base)
    if not segments and method not in ("GET", "HEAD"):
        raise BadRequest(f"{where}.request.url names no resource type", expression=[where])
    resource = raw.get("resource")
    if method in ("POST", "PUT") and not isinstance(resource, dict):
        raise BadRequest(f"{where} has no resource to {method}", expression=[f"{where}.resource"])
    full_url = raw.get("fullUrl")
    strings = {k: request.get(k) for k in ("ifNoneExist", "ifMatch")}
    for key, value in strings.items():
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"{where}.request.{key} must be a string", expression=[where])
    return Entry(
        index=index,
        method=method,
        resource_type=segments[0] if segments else "",
        id=segments[1] if len(segments) > 1 else None,
        rest=segments[2:],
        query=query,
        resource=resource,
        full_url=full_url if isinstance(full_url, str) else None,
        if_none_exist=strings["ifNoneExist"],
        if_match=strings["ifMatch"],
    )


def parse_entries(bundle: Any, base: str, max_entries: int) -> tuple[str, list[Entry]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("POST to the base takes a Bundle of type transaction or batch")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise BadRequest(
            f"Bundle.type must be transaction or batch, not {kind!r}", expression=["Bundle.type"]
        )
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise BadRequest("Bundle.entry must be an array", expression=["Bundle.entry"])
    if len(raw_entries) > max_entries:
        raise PayloadTooLarge(
            f"The Bundle has {len(raw_entries)} entries; the limit is {max_entries}"
        )
    return kind, [_entry(i, raw, base) for i, raw in enumerate(raw_entries)]


def processing_order(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (ORDER[e.method], e.index))
