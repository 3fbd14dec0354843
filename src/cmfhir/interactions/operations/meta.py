"""$meta, $meta-add and $meta-delete at instance level
(https://hl7.org/fhir/R4/resource-operation-meta.html, -meta-add.html, -meta-delete.html).

As the R4 definitions say, adding or removing profiles, tags and security labels changes the
current version in place: no new version is made, so `versionId` and `lastUpdated` stay as
they are. The change is validated, its index rows (`_tag`, `_profile`, `_security`) rebuilt,
and committed before the answer, like any write."""

from __future__ import annotations

from typing import Any

from cmfhir.errors import BadRequest, Gone, NotFound
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.interactions.operations.call import OperationCall
from cmfhir.resources.compartment import patient_compartment
from cmfhir.resources.fhirjson import dump_json, parse_json
from cmfhir.resources.index_values import extract_index
from cmfhir.resources.version_validation import validate_for_version
from cmfhir.store import Repository

__all__ = ["meta", "meta_add", "meta_delete"]

_CODED = ("tag", "security")


def _answer(meta: dict[str, Any]) -> Result:
    return Result(
        200, {"resourceType": "Parameters", "parameter": [{"name": "return", "valueMeta": meta}]}
    )


async def _current(
    repo: Repository, call: OperationCall, *, lock: bool
) -> tuple[int | None, int, dict[str, Any]]:
    assert call.resource_type is not None and call.id is not None
    label = f"{call.resource_type}/{call.id}"
    rid = None
    if lock:
        current = await repo.lock(call.resource_type, call.id)
        if current is None:
            raise NotFound(f"{label} is not known")
        rid = current.rid
    found = await repo.read(call.resource_type, call.id)
    if found is None:
        raise NotFound(f"{label} is not known")
    if found.deleted or found.content is None:
        raise Gone(f"{label} was deleted", headers={"ETag": f'W/"{found.version}"'})
    resource: dict[str, Any] = parse_json(found.content)
    return rid, found.version, resource


async def meta(ctx: FhirContext, call: OperationCall) -> Result:
    async with ctx.store.transaction(principal=ctx.principal, read_only=True) as repo:
        _, _, resource = await _current(repo, call, lock=False)
    return _answer(resource.get("meta", {}))


def _given(call: OperationCall) -> dict[str, Any]:
    given = call.value("meta")
    if not isinstance(given, dict):
        raise BadRequest("The parameter 'meta' must be a Meta (valueMeta)", expression=["meta"])
    for key in ("profile", *_CODED):
        items = given.get(key, [])
        if not isinstance(items, list):
            raise BadRequest(f"meta.{key} must be a list", expression=[f"meta.{key}"])
    for key in _CODED:
        if not all(isinstance(c, dict) for c in given.get(key, [])):
            raise BadRequest(f"meta.{key} must hold Codings", expression=[f"meta.{key}"])
    if not all(isinstance(p, str) for p in given.get("profile", [])):
        raise BadRequest("meta.profile must hold URLs", expression=["meta.profile"])
    return given


def _coding_key(coding: dict[str, Any]) -> tuple[Any, Any]:
    return coding.get("system"), coding.get("code")


def _added(meta: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(meta)
    profiles = list(out.get("profile", []))
    profiles += [p for p in given.get("profile", []) if p not in profiles]
    if profiles:
        out["profile"] = profiles
    for key in _CODED:
        codings = list(out.get(key, []))
        present = {_coding_key(c) for c in codings}
        for coding in given.get(key, []):
            if _coding_key(coding) not in present:
                codings.append(coding)
                present.add(_coding_key(coding))
        if codings:
            out[key] = codings
    return out


def _removed(meta: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(meta)
    gone = set(given.get("profile", []))
    profiles = [p for p in out.get("profile", []) if p not in gone]
    out.pop("profile", None)
    if profiles:
        out["profile"] = profiles
    for key in _CODED:
        drop = {_coding_key(c) for c in given.get(key, [])}
        codings = [c for c in out.get(key, []) if _coding_key(c) not in drop]
        out.pop(key, None)
        if codings:
            out[key] = codings
    return out


async def _change(ctx: FhirContext, call: OperationCall, *, add: bool) -> Result:
    given = _given(call)
    async with ctx.store.transaction(principal=ctx.principal) as repo:
        rid, version, resource = await _current(repo, call, lock=True)
        assert rid is not None and call.resource_type is not None
        before = resource.get("meta", {})
        after = _added(before, given) if add else _removed(before, given)
        if after == before:
            return _answer(before)
        changed: dict[str, Any] = {
            key: (after if key == "meta" else value) for key, value in resource.items()
        }
        validate_for_version(changed, ctx.fhir_version, expected_type=call.resource_type)
        index = extract_index(changed, ctx.registry)
        patients = patient_compartment(changed, ctx.compartment, index)
        await repo.replace_content(rid, version, dump_json(changed).decode())
        await repo.replace_index(
            [(rid, call.resource_type, index, patients[0] if patients else None)]
        )
    return _answer(after)


async def meta_add(ctx: FhirContext, call: OperationCall) -> Result:
    return await _change(ctx, call, add=True)


async def meta_delete(ctx: FhirContext, call: OperationCall) -> Result:
    return await _change(ctx, call, add=False)
