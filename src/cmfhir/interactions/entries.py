"""Reading the entries of a transaction or batch Bundle
(https://hl7.org/fhir/R4B/http.html#transaction): method, url, resource and conditions.

Each entry's URL goes through the parser the REST API's routes mirror
(`request_url.parse_request_url`): an entry names the same interaction the same method and
URL name over HTTP, or carries the error HTTP would answer.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from cmfhir.errors import BadRequest, FhirError, Issue, PayloadTooLarge
from cmfhir.interactions.context import Result, instant
from cmfhir.interactions.request_url import Target, parse_request_url
from cmfhir.resources.fhirjson import RawJson, parse_json

__all__ = [
    "READS",
    "Entry",
    "at_entry",
    "parse_entries",
    "patch_operations",
    "processing_order",
    "response_entry",
]

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# The spec's processing order for a transaction; reads (a search by POST too) come last.
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
READS = frozenset(
    {
        "capabilities",
        "search-system",
        "history-system",
        "search-type",
        "history-type",
        "read",
        "history-instance",
        "search-compartment",
        "vread",
    }
)
STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


@dataclass(slots=True)
class Entry:
    index: int
    method: str
    target: Target
    resource: Any
    full_url: str | None
    if_none_exist: str | None
    if_match: str | None
    # What the REST API answers this method and URL with, when it is an error.
    error: FhirError | None = None
    # The objects of `resource` holding a `reference` (`references.holders`), found once.
    references: list[dict[str, Any]] = field(default_factory=list)

    @property
    def interaction(self) -> str:
        return self.target.interaction

    @property
    def resource_type(self) -> str:
        return self.target.resource_type or ""

    @property
    def id(self) -> str | None:
        return self.target.id

    @property
    def query(self) -> str | None:
        return self.target.query

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


def at_entry(error: FhirError, index: int) -> FhirError:
    """The same error, its locations prefixed with the entry it came from (once: an error
    already placed at an entry is left as it is)."""
    where = f"Bundle.entry[{index}]"
    if all(i.expression and i.expression[0].startswith("Bundle.entry[") for i in error.issues):
        return error
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
    error: FhirError | None = None
    try:
        target = parse_request_url(method, url, base)
        if target.interaction == "transaction":
            raise BadRequest("A Bundle entry cannot POST a Bundle to the base")
    except FhirError as refused:
        target, error = Target("none"), refused
    resource = raw.get("resource")
    if error is None and method in ("POST", "PUT") and not isinstance(resource, dict):
        raise BadRequest(f"{where} has no resource to {method}", expression=[f"{where}.resource"])
    full_url = raw.get("fullUrl")
    strings = {k: request.get(k) for k in ("ifNoneExist", "ifMatch")}
    for key, value in strings.items():
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"{where}.request.{key} must be a string", expression=[where])
    return Entry(
        index=index,
        method=method,
        target=target,
        resource=resource,
        full_url=full_url if isinstance(full_url, str) else None,
        if_none_exist=strings["ifNoneExist"],
        if_match=strings["ifMatch"],
        error=error,
    )


def _version_id(entry: Entry) -> Any:
    meta = entry.resource.get("meta") if isinstance(entry.resource, dict) else None
    return meta.get("versionId") if isinstance(meta, dict) else None


def check_full_urls(entries: list[Entry]) -> None:
    """bdl-7: a fullUrl is unique in a Bundle, unless the entries hold different versions
    (https://hl7.org/fhir/R4B/bundle.html#bundle-unique). References to it would otherwise
    bind to either entry."""
    seen: dict[tuple[str, Any], Entry] = {}
    for entry in entries:
        if entry.full_url is None:
            continue
        key = (entry.full_url, _version_id(entry))
        first = seen.setdefault(key, entry)
        if first is not entry:
            raise BadRequest(
                f"{entry.where}.fullUrl '{entry.full_url}' is also the fullUrl of "
                f"{first.where}; a fullUrl must be unique in a Bundle (bdl-7)",
                expression=[f"{entry.where}.fullUrl"],
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
    entries = [_entry(i, raw, base) for i, raw in enumerate(raw_entries)]
    check_full_urls(entries)
    return kind, entries


def processing_order(entries: list[Entry]) -> list[Entry]:
    """DELETE, POST, PUT and PATCH, then reads; in Bundle order within each
    (https://hl7.org/fhir/R4B/http.html#trules)."""
    return sorted(
        entries,
        key=lambda e: (ORDER["GET"] if e.interaction in READS else ORDER[e.method], e.index),
    )


def patch_operations(entry: Entry) -> Any:
    """A JSON Patch in a Bundle travels as a Binary (https://hl7.org/fhir/R4B/http.html#patch)."""
    binary = entry.resource
    if not isinstance(binary, dict) or binary.get("resourceType") != "Binary":
        raise BadRequest("A PATCH entry carries its JSON Patch as a Binary resource")
    if binary.get("contentType") != "application/json-patch+json":
        raise BadRequest("Only JSON Patch (application/json-patch+json) is supported")
    try:
        return parse_json(base64.b64decode(binary.get("data", ""), validate=True))
    except (binascii.Error, ValueError) as error:
        raise BadRequest("The Binary's data is not base64") from error


def response_entry(result: Result, representation: bool) -> dict[str, Any]:
    """The `Bundle.entry` of a transaction-response or batch-response for one result."""
    response: dict[str, Any] = {"status": STATUS_TEXT.get(result.status, str(result.status))}
    if result.location:
        response["location"] = result.location
    if result.etag:
        response["etag"] = result.etag
    if result.last_updated:
        response["lastModified"] = instant(result.last_updated)
    entry: dict[str, Any] = {"response": response}
    if result.body is not None and (representation or result.status >= 400 or not result.location):
        body = result.body
        entry["resource"] = RawJson(body.encode()) if isinstance(body, str) else body
    return entry
