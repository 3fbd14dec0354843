"""$validate at type and instance level (https://hl7.org/fhir/R4/resource-operation-validate.html):
the resource is checked exactly as a create or update would check it, and the answer is the
OperationOutcome; nothing is stored. The answer is 200 whenever the validation could be
done, valid or not; a 4xx means it could not be done (no resource, an unsupported mode or
profile)."""

from __future__ import annotations

from typing import Any

from cmfhir.errors import BadRequest, FhirError, Gone, Issue, NotFound, operation_outcome
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.interactions.operations.call import OperationCall
from cmfhir.interactions.questionnaire_responses import response_problems
from cmfhir.resources.version_validation import validate_for_version

__all__ = ["run"]

MODES = ("create", "update", "delete")
CORE_PROFILE = "http://hl7.org/fhir/StructureDefinition/"


def _check_profile(call: OperationCall, resource_type: str) -> None:
    profile = call.value("profile")
    if profile is not None and profile.split("|")[0] != CORE_PROFILE + resource_type:
        raise BadRequest(
            f"cmfhir validates against the core specification only, not the profile '{profile}'",
            code="not-supported",
            expression=["profile"],
        )


def _issues(ctx: FhirContext, call: OperationCall, resource: Any, mode: str | None) -> list[Issue]:
    assert call.resource_type is not None
    issues: list[Issue] = []
    try:
        validate_for_version(resource, ctx.fhir_version, expected_type=call.resource_type)
    except FhirError as error:
        # Any refusal of the content (400 invalid, 422 a type that is never stored) is the
        # answer $validate gives; only a failure of the server itself propagates.
        if not 400 <= error.status < 500:
            raise
        issues.extend(error.issues)
    body_id = resource.get("id") if isinstance(resource, dict) else None
    if mode == "update" and body_id is None:
        issues.append(Issue("An update needs the resource's id", expression=("id",)))
    if mode == "update" and call.id is not None and body_id not in (None, call.id):
        issues.append(
            Issue(
                f"The resource's id ('{body_id}') differs from the id in the URL ('{call.id}')",
                expression=("id",),
            )
        )
    return issues


async def _deletable(ctx: FhirContext, call: OperationCall) -> list[Issue]:
    if call.id is None:
        raise BadRequest("$validate with mode=delete names a resource: [type]/[id]/$validate")
    label = f"{call.resource_type}/{call.id}"
    async with ctx.store.transaction(principal=ctx.principal, read_only=True) as repo:
        assert call.resource_type is not None
        found = await repo.read(call.resource_type, call.id)
    if found is None:
        raise NotFound(f"{label} is not known")
    if found.deleted:
        raise Gone(f"{label} was deleted")
    return []


async def run(ctx: FhirContext, call: OperationCall) -> Result:
    assert call.resource_type is not None
    mode = call.value("mode")
    if mode is not None and mode not in MODES:
        raise BadRequest(
            f"mode '{mode}' is not supported; use one of {', '.join(MODES)} or none",
            code="not-supported",
            expression=["mode"],
        )
    _check_profile(call, call.resource_type)
    if mode == "delete":
        issues = await _deletable(ctx, call)
    else:
        resource = call.resource("resource")
        if resource is None:
            raise BadRequest(
                "$validate needs the resource (the body, or the parameter 'resource') "
                "unless mode is delete",
                expression=["resource"],
            )
        issues = _issues(ctx, call, resource, mode)
        if not issues and call.resource_type == "QuestionnaireResponse":
            # As a write checks it: against the stored Questionnaire it names.
            async with ctx.store.transaction(read_only=True, principal=ctx.principal) as repo:
                issues = await response_problems(ctx, repo, resource)
    if not issues:
        issues = [Issue("No issues detected", code="informational", severity="information")]
    return Result(200, operation_outcome(issues))
