"""$expand (https://hl7.org/fhir/R4/valueset-operation-expand.html): the codes of a ValueSet,
named by `url` (and `valueSetVersion`) or sent as `valueSet` at type level, or the stored one
at instance level; `filter`, `count` and `offset` narrow and page the answer. How a compose
is expanded is in `resources.valuesets`."""

from __future__ import annotations

import uuid
from typing import Any

from cmfhir.errors import BadRequest, Gone, NotFound, PayloadTooLarge
from cmfhir.interactions.context import FhirContext, Result, instant, utcnow
from cmfhir.interactions.operations.call import OperationCall
from cmfhir.interactions.terminology import expand_value_set, find_canonical
from cmfhir.resources.fhir_versions import R4
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.valuesets import Concept, binding_expansions, matches_filter
from cmfhir.resources.version_validation import validate_for_version
from cmfhir.store import Repository

__all__ = ["MAX_CODES", "run"]

# An expansion answered whole (no `count`) holds at most this many codes.
MAX_CODES = 10_000
# What the answer keeps of the expanded ValueSet: its identity, not its definition.
_KEPT = ("id", "url", "identifier", "version", "name", "title", "status", "publisher", "date")


def _non_negative(call: OperationCall, name: str) -> int | None:
    value = call.value(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"Parameter '{name}' must be an integer of 0 or more", expression=[name])
    return value


async def _value_set(
    ctx: FhirContext, repo: Repository, call: OperationCall
) -> tuple[dict[str, Any], list[Concept] | None]:
    """The ValueSet to expand, and its codes when they come from a required binding."""
    if call.level == "instance":
        assert call.id is not None
        found = await repo.read("ValueSet", call.id)
        if found is None:
            raise NotFound(f"ValueSet/{call.id} is not known")
        if found.deleted or found.content is None:
            raise Gone(f"ValueSet/{call.id} was deleted")
        stored: dict[str, Any] = parse_json(found.content)
        return stored, None
    sent = call.resource("valueSet")
    url = call.value("url")
    if sent is not None and url is not None:
        raise BadRequest("$expand takes url or valueSet, not both", expression=["url"])
    if sent is not None:
        validate_for_version(sent, ctx.fhir_version, expected_type="ValueSet")
        return sent, None
    if not isinstance(url, str) or not url:
        raise BadRequest(
            "$expand at type level needs the parameter 'url' or 'valueSet'", expression=["url"]
        )
    version = call.value("valueSetVersion")
    canonical = f"{url}|{version}" if version else url
    held = await find_canonical(ctx, repo, "ValueSet", canonical)
    if held is not None:
        return held, None
    bound = binding_expansions(ctx.fhir_version == R4).get(url)
    if bound is not None and version is None:
        return {"resourceType": "ValueSet", "url": url, "status": "active"}, list(bound)
    raise NotFound(f"No ValueSet with url '{canonical}' is known", expression=["url"])


async def run(ctx: FhirContext, call: OperationCall) -> Result:
    count = _non_negative(call, "count")
    offset = _non_negative(call, "offset") or 0
    text = call.value("filter")
    if call.level == "instance" and (call.value("url") or call.resource("valueSet")):
        raise BadRequest(
            "ValueSet/[id]/$expand expands that ValueSet: leave out url and valueSet",
            expression=["url"],
        )
    async with ctx.store.transaction(read_only=True, principal=ctx.principal) as repo:
        value_set, codes = await _value_set(ctx, repo, call)
        if codes is None:
            codes = await expand_value_set(ctx, repo, value_set)
    if isinstance(text, str) and text.strip():
        codes = [c for c in codes if matches_filter(c, text)]
    if count is None and len(codes) - offset > MAX_CODES:
        raise PayloadTooLarge(
            f"The expansion holds {len(codes)} codes; ask for a page with count (at most "
            f"{MAX_CODES} without it)",
            expression=["count"],
        )
    page = codes[offset:] if count is None else codes[offset : offset + count]
    parameters: list[dict[str, Any]] = []
    if isinstance(text, str):
        parameters.append({"name": "filter", "valueString": text})
    if count is not None:
        parameters.append({"name": "count", "valueInteger": count})
    if offset:
        parameters.append({"name": "offset", "valueInteger": offset})
    expansion: dict[str, Any] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": instant(utcnow()),
        "total": len(codes),
        "offset": offset,
    }
    if parameters:
        expansion["parameter"] = parameters
    if page:
        expansion["contains"] = [c.to_json() for c in page]
    answer: dict[str, Any] = {"resourceType": "ValueSet"}
    answer.update({k: value_set[k] for k in _KEPT if k in value_set})
    answer.setdefault("status", "active")
    answer["expansion"] = expansion
    return Result(200, answer)
