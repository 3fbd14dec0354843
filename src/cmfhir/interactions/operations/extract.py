"""$extract (SDC, https://hl7.org/fhir/uv/sdc/OperationDefinition-QuestionnaireResponse-extract.html):
the Observations and Conditions a QuestionnaireResponse yields, as a transaction Bundle
(`resources.questionnaire_extract`). At instance level the stored response; at type level
the one sent. Nothing is stored: the client reviews the Bundle and posts it to the base,
and its conditional creates make a second post change nothing."""

from __future__ import annotations

from typing import Any

from cmfhir.errors import BadRequest, Gone, NotFound, Unprocessable
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.interactions.operations.call import OperationCall
from cmfhir.interactions.questionnaire_responses import ResponseChecker
from cmfhir.interactions.terminology import find_canonical
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.questionnaire_extract import extract_bundle
from cmfhir.resources.version_validation import validate_for_version
from cmfhir.store import Repository

__all__ = ["run"]


async def _response(repo: Repository, ctx: FhirContext, call: OperationCall) -> dict[str, Any]:
    if call.level == "instance":
        assert call.id is not None
        if call.resource("questionnaire-response") is not None:
            raise BadRequest(
                "QuestionnaireResponse/[id]/$extract extracts the stored response: send none",
                expression=["questionnaire-response"],
            )
        found = await repo.read("QuestionnaireResponse", call.id)
        if found is None:
            raise NotFound(f"QuestionnaireResponse/{call.id} is not known")
        if found.deleted or found.content is None:
            raise Gone(f"QuestionnaireResponse/{call.id} was deleted")
        stored: dict[str, Any] = parse_json(found.content)
        return stored
    sent = call.resource("questionnaire-response")
    if sent is None:
        raise BadRequest(
            "QuestionnaireResponse/$extract needs the response: the body, or the parameter "
            "'questionnaire-response'",
            expression=["questionnaire-response"],
        )
    validate_for_version(sent, ctx.fhir_version, expected_type="QuestionnaireResponse")
    return sent


async def run(ctx: FhirContext, call: OperationCall) -> Result:
    async with ctx.store.transaction(read_only=True, principal=ctx.principal) as repo:
        response = await _response(repo, ctx, call)
        canonical = response.get("questionnaire")
        questionnaire = (
            await find_canonical(ctx, repo, "Questionnaire", canonical)
            if isinstance(canonical, str)
            else None
        )
        if questionnaire is None:
            raise Unprocessable(
                f"The response's questionnaire '{canonical}' is not held by this server, so "
                "nothing says what to extract",
                expression=["QuestionnaireResponse.questionnaire"],
            )
        if call.level == "type":
            # A stored response was checked when written; a sent one is checked here.
            await ResponseChecker(ctx, repo).check_resource(response)
    return Result(200, extract_bundle(questionnaire, response))
