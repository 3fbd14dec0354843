"""patch with JSON Patch (https://hl7.org/fhir/R4B/http.html#patch, RFC 6902). The patched
resource is validated like any update; a patch that breaks it changes nothing."""

from __future__ import annotations

from typing import Any

import jsonpatch
import jsonpointer

from cmfhir.errors import BadRequest, Gone, NotFound, PayloadTooLarge, Unprocessable
from cmfhir.interactions.common import check_id, check_if_match, require_type
from cmfhir.interactions.context import FhirContext, Result, utcnow
from cmfhir.interactions.questionnaire_responses import ResponseChecker
from cmfhir.interactions.versions import to_version, written
from cmfhir.resources.fhirjson import dump_json, parse_json
from cmfhir.resources.sizes import MAX_STRING_BYTES, check_string_sizes
from cmfhir.resources.version_validation import validate_for_version
from cmfhir.store import NewVersion, Repository

__all__ = ["apply_patch", "patch", "patch_in"]


def _where(index: int, operation: Any) -> str:
    """The operation as the client wrote it: its position, op and path (never a value)."""
    if not isinstance(operation, dict):
        return f"operation {index}"
    op, path = operation.get("op"), operation.get("path")
    named = f" ({op})" if isinstance(op, str) and len(op) <= 16 else ""
    at = f" at '{path}'" if isinstance(path, str) and len(path) <= 256 else ""
    return f"operation {index}{named}{at}"


def apply_patch(current: dict[str, Any], operations: Any, *, max_copied: int) -> Any:
    """`current` with the operations applied (it is changed in place).

    `copy` is the one operation that adds more than the patch itself holds: each can double
    the document, so a few dozen of them would take all memory. What copies add is
    counted, and past `max_copied` bytes of JSON the patch is refused.

    Errors name the operation and its path but never quote the stored resource: whoever may
    patch a resource is not necessarily allowed to read it, and the library's messages
    print the values a `test` compared and the objects a path did not resolve in."""
    if not isinstance(operations, list):
        raise BadRequest("A JSON Patch document must be a JSON array of operations")
    document: Any = current
    copied = 0
    for index, operation in enumerate(operations):
        where = _where(index, operation)
        try:
            source_path = operation.get("from") if isinstance(operation, dict) else None
            if isinstance(source_path, str) and operation.get("op") == "copy":
                source = jsonpointer.resolve_pointer(document, source_path)
                copied += len(dump_json(source))
                if copied > max_copied:
                    raise PayloadTooLarge(
                        f"The JSON Patch copies more than {max_copied} bytes of JSON"
                    )
            document = jsonpatch.JsonPatch([operation]).apply(document, in_place=True)
        except jsonpatch.JsonPatchTestFailed:
            raise Unprocessable(
                f"The JSON Patch test failed: {where}: the value there is not the tested value"
            ) from None
        except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException):
            raise Unprocessable(
                f"The JSON Patch cannot be applied: {where}: the path does not exist in the "
                "resource or cannot take the value"
            ) from None
        except jsonpatch.InvalidJsonPatch as error:
            # These messages describe the operation itself, which the client wrote.
            raise BadRequest(f"Invalid JSON Patch: {where}: {error}") from None
        except (TypeError, ValueError, KeyError):
            raise BadRequest(f"Invalid JSON Patch: {where} is malformed") from None
    # A patch can add a long string, or move base64 data into a string element.
    if isinstance(document, dict) and len(dump_json(document)) > MAX_STRING_BYTES:
        check_string_sizes(document)
    return document


async def patch_in(
    ctx: FhirContext,
    repo: Repository,
    resource_type: str,
    id: str,
    operations: Any,
    *,
    if_match: str | None = None,
) -> NewVersion:
    current = await repo.lock(resource_type, id)
    if current is None:
        raise NotFound(f"{resource_type}/{id} is not known")
    if current.deleted:
        raise Gone(f"{resource_type}/{id} was deleted")
    check_if_match(if_match, current.version, f"{resource_type}/{id}")
    stored = await repo.read(resource_type, id)
    assert stored is not None and stored.content is not None
    patched = apply_patch(
        parse_json(stored.content), operations, max_copied=ctx.limits.max_body_bytes
    )
    validate_for_version(patched, ctx.fhir_version, expected_type=resource_type)
    if patched.get("id") != id:
        raise Unprocessable("A patch must not change the resource's id", expression=["id"])
    record, _ = to_version(
        ctx,
        patched,
        id=id,
        version=current.version + 1,
        now=utcnow(),
        method="update",
        rid=current.rid,
    )
    await repo.write([record])
    await ResponseChecker(ctx, repo).check(record)
    return record


async def patch(
    ctx: FhirContext,
    resource_type: str,
    id: str,
    operations: Any,
    *,
    if_match: str | None = None,
) -> Result:
    require_type(resource_type, ctx.fhir_version)
    check_id(id)
    async with ctx.store.transaction(principal=ctx.principal) as repo:
        record = await patch_in(ctx, repo, resource_type, id, operations, if_match=if_match)
    return written(record, created=False)
