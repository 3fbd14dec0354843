"""The QuestionnaireResponse rules without a database (resources.questionnaire_response):
enableWhen operators and enableBehavior, questions nested under answers, order, repeats and
answers from a value set's expansion."""

from __future__ import annotations

from typing import Any

import pytest

from cmfhir.resources.questionnaire_response import response_issues

CODED = "https://example.org/ValueSet/coded"
FORM: dict[str, Any] = {
    "resourceType": "Questionnaire",
    "url": "https://example.org/Questionnaire/rules",
    "status": "active",
    "item": [
        {"linkId": "age", "text": "Age", "type": "integer"},
        {"linkId": "smokes", "text": "Smokes", "type": "boolean"},
        {
            "linkId": "adult-smoker",
            "text": "Packs a day",
            "type": "decimal",
            "enableWhen": [
                {"question": "age", "operator": ">=", "answerInteger": 18},
                {"question": "smokes", "operator": "=", "answerBoolean": True},
            ],
            "enableBehavior": "all",
        },
        {
            "linkId": "no-age",
            "text": "Why no age?",
            "type": "string",
            "enableWhen": [{"question": "age", "operator": "exists", "answerBoolean": False}],
        },
        {
            "linkId": "not-child",
            "text": "Not 10",
            "type": "string",
            "enableWhen": [{"question": "age", "operator": "!=", "answerInteger": 10}],
        },
        {
            "linkId": "colour",
            "text": "Colour",
            "type": "choice",
            "answerValueSet": CODED,
            "item": [
                {
                    "linkId": "shade",
                    "text": "Shade",
                    "type": "string",
                    "required": True,
                    "enableWhen": [
                        {
                            "question": "colour",
                            "operator": "=",
                            "answerCoding": {"system": "urn:c", "code": "red"},
                        }
                    ],
                }
            ],
        },
    ],
}
CODES = {CODED: frozenset({("urn:c", "red"), ("urn:c", "blue")})}


def q(link_id: str, value: dict[str, Any], *children: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = dict(value)
    if children:
        answer["item"] = list(children)
    return {"linkId": link_id, "answer": [answer]}


def issues(*items: dict[str, Any], status: str = "completed") -> dict[str, str]:
    response = {"resourceType": "QuestionnaireResponse", "status": status, "item": list(items)}
    return {i.expression[0]: i.diagnostics for i in response_issues(FORM, response, CODES)}


AGE_30 = q("age", {"valueInteger": 30})
AGE_10 = q("age", {"valueInteger": 10})
SMOKES = q("smokes", {"valueBoolean": True})
PACKS = q("adult-smoker", {"valueDecimal": 1.5})


@pytest.mark.parametrize(
    ("items", "faulty"),
    [
        pytest.param([AGE_30, SMOKES, PACKS], set(), id="all-hold"),
        pytest.param([AGE_10, SMOKES, PACKS], {"item[2]"}, id="all-one-fails"),
        pytest.param([SMOKES, PACKS], {"item[1]"}, id="all-unanswered"),
        pytest.param([q("no-age", {"valueString": "x"})], set(), id="exists-false"),
        pytest.param([AGE_30, q("no-age", {"valueString": "x"})], {"item[1]"}, id="exists-fails"),
        pytest.param([AGE_30, q("not-child", {"valueString": "x"})], set(), id="not-equal"),
        pytest.param([AGE_10, q("not-child", {"valueString": "x"})], {"item[1]"}, id="equal"),
        pytest.param([q("not-child", {"valueString": "x"})], {"item[0]"}, id="not-equal-none"),
    ],
)
def test_enable_when(items: list[dict[str, Any]], faulty: set[str]) -> None:
    found = issues(*items)
    assert set(found) == {f"QuestionnaireResponse.{f}" for f in faulty}, found
    assert all("not enabled" in text for text in found.values())


def test_nested_under_answer() -> None:
    red = {"valueCoding": {"system": "urn:c", "code": "red"}}
    blue = {"valueCoding": {"system": "urn:c", "code": "blue"}}
    assert issues(q("colour", red, q("shade", {"valueString": "dark"}))) == {}
    # an unknown item inside the answer, and the required one missing there while enabled
    assert list(issues(q("colour", red, q("other", {"valueString": "x"})))) == [
        "QuestionnaireResponse.item[0].answer[0].item[0]",
        "QuestionnaireResponse.item[0].answer[0].item.where(linkId='shade')",
    ]
    assert list(issues(q("colour", blue, q("shade", {"valueString": "dark"})))) == [
        "QuestionnaireResponse.item[0].answer[0].item[0]"
    ]
    wrong_place = {"linkId": "colour", "item": [q("shade", {"valueString": "dark"})]}
    assert "answer's item" in issues(wrong_place)["QuestionnaireResponse.item[0]"]


def test_value_set_order_and_repeats() -> None:
    green = {"valueCoding": {"system": "urn:c", "code": "green"}}
    assert "not in the value set" in issues(q("colour", green))["QuestionnaireResponse.item[0]"]
    found = issues(SMOKES, AGE_30)
    assert "out of the Questionnaire's order" in found["QuestionnaireResponse.item[1]"]
    found = issues(AGE_30, AGE_10)
    assert "more than once" in found["QuestionnaireResponse.item[1]"]
    twice = {"linkId": "age", "answer": [{"valueInteger": 1}, {"valueInteger": 2}]}
    assert "does not repeat" in issues(twice)["QuestionnaireResponse.item[0]"]


def test_long_chain_of_conditions() -> None:
    """Each item enabled by the one after it, so checking the first follows the whole chain:
    one past the recursion limit is no 500."""
    length = 3000
    items: list[dict[str, Any]] = []
    for n in range(length - 1):
        when = {"question": f"q{n + 1}", "operator": "exists", "answerBoolean": True}
        items.append({"linkId": f"q{n}", "text": "q", "type": "boolean", "enableWhen": [when]})
    items.append({"linkId": f"q{length - 1}", "text": "q", "type": "boolean"})
    form = {"resourceType": "Questionnaire", "status": "active", "item": items}
    answers = [{"linkId": f"q{n}", "answer": [{"valueBoolean": True}]} for n in range(length)]
    response = {"resourceType": "QuestionnaireResponse", "status": "completed", "item": answers}
    assert response_issues(form, response) == []
