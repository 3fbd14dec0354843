"""Building the Bundles that search and history return, with stored resources embedded
as raw JSON text rather than parsed and serialized again
(https://hl7.org/fhir/R4B/bundle.html#searchset, #history)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from cmfhir.errors import Issue, operation_outcome
from cmfhir.interactions.context import instant
from cmfhir.resources.fhirjson import RawJson, dump_json
from cmfhir.resources.key_order import resource_type_first
from cmfhir.store import StoredVersion

__all__ = ["history_bundle", "link", "search_bundle"]


def link(base: str, path: str, params: list[tuple[str, str]]) -> str:
    url = f"{base}/{path}" if path else base
    return f"{url}?{urlencode(params)}" if params else url


def _resource(resource_type: str, content: str | dict[str, Any]) -> Any:
    # Stored text is embedded as it is (resourceType first); only a subset (_summary,
    # _elements) was parsed.
    if isinstance(content, str):
        return RawJson(resource_type_first(content, resource_type).encode())
    return {"resourceType": resource_type, **content}


def _entry(base: str, resource_type: str, id: str, content: str, tail: str) -> RawJson:
    """A whole stored resource's entry as the JSON text `dump_json` would write for
    `{"fullUrl": ..., "resource": ..., "search": {"mode": ...}}` (`tail` is what follows
    the resource), in one piece: building three dicts per entry for orjson to walk cost a
    page of 50 about half of its rendering."""
    url = dump_json(f"{base}/{resource_type}/{id}").decode()
    resource = resource_type_first(content, resource_type)
    return RawJson("".join(('{"fullUrl":', url, ',"resource":', resource, tail)))


_TAILS = {mode: f',"search":{{"mode":"{mode}"}}}}' for mode in ("match", "include")}


def search_bundle(
    base: str,
    matches: Sequence[tuple[str, str, str | dict[str, Any]]],
    *,
    included: Sequence[tuple[str, str, str | dict[str, Any]]] = (),
    total: int | None,
    links: dict[str, str],
    warnings: list[Issue],
) -> dict[str, Any]:
    """A searchset: the matches, then the resources `_include`/`_revinclude` brought
    (https://hl7.org/fhir/R4B/search.html#include), then an OperationOutcome for warnings.
    Each resource is `(type, id, content)`, content as stored text or a parsed subset.
    An entry of stored text is one `RawJson`; one of a parsed subset a dict."""
    entries: list[Any] = [
        _entry(base, resource_type, id, content, _TAILS[mode])
        if isinstance(content, str)
        else {
            "fullUrl": f"{base}/{resource_type}/{id}",
            "resource": _resource(resource_type, content),
            "search": {"mode": mode},
        }
        for mode, resources in (("match", matches), ("include", included))
        for resource_type, id, content in resources
    ]
    if warnings:
        entries.append({"resource": operation_outcome(warnings), "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = [{"relation": rel, "url": url} for rel, url in links.items()]
    if entries:
        bundle["entry"] = entries
    return bundle


def history_bundle(
    base: str, versions: list[StoredVersion], links: dict[str, str], *, total: int | None = None
) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for v in versions:
        url = f"{v.resource_type}/{v.id}"
        entry: dict[str, Any] = {"fullUrl": f"{base}/{url}"}
        if v.content is not None:
            entry["resource"] = RawJson(resource_type_first(v.content, v.resource_type).encode())
        method = {"create": "POST", "update": "PUT", "delete": "DELETE"}.get(v.method, "PUT")
        entry["request"] = {"method": method, "url": v.resource_type if method == "POST" else url}
        entry["response"] = {
            "status": {"create": "201 Created", "delete": "204 No Content"}.get(v.method, "200 OK"),
            "etag": f'W/"{v.version}"',
            "lastModified": instant(v.last_updated),
        }
        entries.append(entry)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = [{"relation": rel, "url": url} for rel, url in links.items()]
    if entries:
        bundle["entry"] = entries
    return bundle
