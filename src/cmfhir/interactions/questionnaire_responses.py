"""QuestionnaireResponses checked against their Questionnaire on every write
(https://hl7.org/fhir/R4/questionnaireresponse.html#link): create, update, patch and the
entries of transactions and batches call `ResponseChecker.check` with each version they
wrote, inside their database transaction, so a Questionnaire written earlier in the same
transaction counts and a refusal rolls everything back.

A response whose `questionnaire` names no stored Questionnaire is stored unchecked (the
form may live elsewhere). The rules are in `resources.questionnaire_response`.
"""

from __future__ import annotations

from typing import Any

from cmfhir.errors import InvalidResource
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.terminology import find_canonical, value_set_codes
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.questionnaire_response import Codes, response_issues
from cmfhir.store import NewVersion, Repository

__all__ = ["ResponseChecker", "response_problems"]

# Writes of these change what a response is checked against.
_DEFINITIONS = frozenset({"Questionnaire", "ValueSet", "CodeSystem"})


def _answer_value_sets(items: Any, found: set[str]) -> set[str]:
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict):
            if isinstance(item.get("answerValueSet"), str):
                found.add(item["answerValueSet"])
            _answer_value_sets(item.get("item"), found)
    return found


class ResponseChecker:
    """Checks the QuestionnaireResponses written in one transaction; what it looked up is
    kept for the transaction's other entries until a definition is written."""

    def __init__(self, ctx: FhirContext, repo: Repository) -> None:
        self.ctx = ctx
        self.repo = repo
        self._questionnaires: dict[str, dict[str, Any] | None] = {}
        self._codes: dict[str, dict[str, Codes | None]] = {}

    async def check(self, record: NewVersion) -> None:
        """Raise InvalidResource (one issue per item at fault) when `record` is a
        QuestionnaireResponse that does not fit the stored Questionnaire it names."""
        if record.resource_type in _DEFINITIONS:
            self._questionnaires.clear()
            self._codes.clear()
            return
        if record.resource_type != "QuestionnaireResponse" or record.content is None:
            return
        await self.check_resource(parse_json(record.content))

    async def check_resource(self, response: dict[str, Any]) -> None:
        issues = await self.issues(response)
        if issues:
            canonical = response.get("questionnaire")
            raise InvalidResource(
                f"The QuestionnaireResponse does not fit {canonical}", issues=issues
            )

    async def issues(self, response: dict[str, Any]) -> list[Any]:
        canonical = response.get("questionnaire")
        if not isinstance(canonical, str):
            return []
        questionnaire = await self._questionnaire(canonical)
        if questionnaire is None:
            return []
        codes = await self._value_sets(canonical, questionnaire)
        return response_issues(questionnaire, response, codes)

    async def _questionnaire(self, canonical: str) -> dict[str, Any] | None:
        if canonical not in self._questionnaires:
            self._questionnaires[canonical] = await find_canonical(
                self.ctx, self.repo, "Questionnaire", canonical
            )
        return self._questionnaires[canonical]

    async def _value_sets(
        self, canonical: str, questionnaire: dict[str, Any]
    ) -> dict[str, Codes | None]:
        known = self._codes.get(canonical)
        if known is None:
            known = {}
            contained = questionnaire.get("contained")
            for url in sorted(_answer_value_sets(questionnaire.get("item"), set())):
                concepts = await value_set_codes(
                    self.ctx,
                    self.repo,
                    url,
                    contained if isinstance(contained, list) else None,
                )
                known[url] = None if concepts is None else frozenset(c.key for c in concepts)
            self._codes[canonical] = known
        return known


async def response_problems(
    ctx: FhirContext, repo: Repository, response: dict[str, Any]
) -> list[Any]:
    """The issues of one response against its stored Questionnaire ($validate)."""
    return await ResponseChecker(ctx, repo).issues(response)
