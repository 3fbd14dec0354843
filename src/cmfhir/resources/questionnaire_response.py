"""A QuestionnaireResponse checked against its Questionnaire
(https://hl7.org/fhir/R4/questionnaireresponse.html#link, the rules the HL7 validator applies):
every linkId is an item of the Questionnaire at that place, items keep the Questionnaire's
order and nesting, answers have the item's type and come from its answerOption or
answerValueSet, a non-repeating item has at most one answer, an item that is not enabled
(enableWhen) has none, and in a completed or amended response every enabled required item
is there. One issue per item at fault, located by its FHIRPath expression.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cmfhir.errors import Issue
from cmfhir.resources.questionnaire import Level, Node, ResponseTree, answer_value, same_value

__all__ = ["ANSWER_TYPES", "Codes", "response_issues"]

# (system, code) pairs of a value set's expansion.
Codes = frozenset[tuple[str | None, str]]

# The answer value[x] each item type takes (R4 Questionnaire.item.type); choice items take
# their answerOptions' kinds (valueCoding for an answerValueSet), open-choice also valueString.
ANSWER_TYPES: dict[str, frozenset[str]] = {
    "boolean": frozenset({"valueBoolean"}),
    "decimal": frozenset({"valueDecimal"}),
    "integer": frozenset({"valueInteger"}),
    "date": frozenset({"valueDate"}),
    "dateTime": frozenset({"valueDateTime"}),
    "time": frozenset({"valueTime"}),
    "string": frozenset({"valueString"}),
    "text": frozenset({"valueString"}),
    "url": frozenset({"valueUri"}),
    "attachment": frozenset({"valueAttachment"}),
    "reference": frozenset({"valueReference"}),
    "quantity": frozenset({"valueQuantity"}),
    "choice": frozenset({"valueCoding"}),
    "open-choice": frozenset({"valueCoding", "valueString"}),
}
# Statuses of a response someone says is finished: only these must hold every required item.
_FINISHED = frozenset({"completed", "amended"})
_STRINGS = frozenset({"valueString", "valueUri"})
_NO_ANSWER = "it is required but has no answer"


def _label(definition: dict[str, Any]) -> str:
    text = definition.get("text")
    link_id = definition.get("linkId")
    if isinstance(text, str) and text:
        short = text if len(text) <= 60 else text[:57] + "..."
        return f"'{link_id}' ({short})"
    return f"'{link_id}'"


def _options(definition: dict[str, Any]) -> list[tuple[str, Any]]:
    options = definition.get("answerOption")
    if not isinstance(options, list):
        return []
    found = (answer_value(option) for option in options)
    return [value for value in found if value is not None]


def _allowed_kinds(definition: dict[str, Any]) -> frozenset[str]:
    kind = definition.get("type")
    allowed = ANSWER_TYPES.get(kind if isinstance(kind, str) else "", frozenset())
    options = _options(definition)
    if kind in ("choice", "open-choice") and options:
        allowed = frozenset(key for key, _ in options)
        if kind == "open-choice":
            allowed |= {"valueString"}
    return allowed


def _answer_problem(
    definition: dict[str, Any],
    answer: dict[str, Any],
    position: int,
    value_sets: Mapping[str, Codes | None],
) -> str | None:
    found = answer_value(answer)
    if found is None:
        return f"answer[{position}] has no value"
    key, value = found
    allowed = _allowed_kinds(definition)
    kind = definition.get("type")
    if key not in allowed:
        expected = " or ".join(sorted(allowed)) or "no answer"
        return f"answer[{position}] is a {key}, but a {kind} item takes {expected}"
    max_length = definition.get("maxLength")
    long = isinstance(value, str) and isinstance(max_length, int) and len(value) > max_length
    if key in _STRINGS and long:
        return f"answer[{position}] is longer than the item's maxLength ({max_length})"
    if kind == "open-choice" and key == "valueString":
        return None  # free text is what open-choice allows beside the options
    options = _options(definition)
    if options:
        datatype = key.removeprefix("value")
        if not any(k == key and same_value(datatype, value, v) for k, v in options):
            return f"answer[{position}] is not one of the item's answerOptions"
        return None
    value_set = definition.get("answerValueSet")
    if key == "valueCoding" and isinstance(value_set, str) and kind == "choice":
        codes = value_sets.get(value_set)
        if codes is None:
            return None  # a value set cmfhir cannot expand is not checked
        system = value.get("system") if isinstance(value, dict) else None
        code = value.get("code") if isinstance(value, dict) else None
        if (system, code) not in codes:
            shown = f"{system}|{code}" if system else str(code)
            return f"answer[{position}] ({shown}) is not in the value set {value_set}"
    return None


def _node_problems(
    tree: ResponseTree,
    node: Node,
    definition: dict[str, Any],
    finished: bool,
    value_sets: Mapping[str, Codes | None],
) -> list[str]:
    problems: list[str] = []
    kind = definition.get("type")
    answers = node.answers()
    if kind in ("group", "display"):
        if "answer" in node.item:
            problems.append(f"a {kind} item has no answers")
        if kind == "display" and "item" in node.item:
            problems.append("a display item has no items")
        return problems
    if "item" in node.item:
        problems.append("the items nested under a question go in its answer's item, not its own")
    if answers and not tree.enabled(node):
        problems.append("it has an answer, but it is not enabled (enableWhen)")
    if len(answers) > 1 and definition.get("repeats") is not True:
        problems.append(f"it has {len(answers)} answers, but the item does not repeat")
    for position, answer in enumerate(answers):
        problem = _answer_problem(definition, answer, position, value_sets)
        if problem is not None:
            problems.append(problem)
    if finished and not answers and definition.get("required") is True and tree.enabled(node):
        problems.append(_NO_ANSWER)
    return problems


def _level_issues(
    tree: ResponseTree,
    level: Level,
    url: str,
    finished: bool,
    value_sets: Mapping[str, Codes | None],
) -> list[Issue]:
    issues: list[Issue] = []
    order = {d.get("linkId"): i for i, d in enumerate(level.definitions)}
    seen: set[Any] = set()
    last = -1
    for node in level.nodes:
        definition = node.definition
        if definition is None:
            known = ", ".join(str(d.get("linkId")) for d in level.definitions) or "none"
            issues.append(
                Issue(
                    f"Item linkId '{node.link_id}' is not an item of {url} here "
                    f"(the items here are: {known})",
                    code="structure",
                    expression=(node.path,),
                )
            )
            continue
        problems: list[str] = []
        position = order[node.link_id]
        if node.link_id in seen and definition.get("repeats") is not True:
            problems.append("it appears more than once here, but the item does not repeat")
        elif node.link_id in seen and definition.get("type") != "group":
            problems.append("it appears more than once here: repeated answers go in one item")
        elif position < last:
            problems.append("it is out of the Questionnaire's order")
        seen.add(node.link_id)
        last = max(last, position)
        problems.extend(_node_problems(tree, node, definition, finished, value_sets))
        if problems:
            missing = problems == [_NO_ANSWER]
            issues.append(
                Issue(
                    f"Item {_label(definition)}: " + "; ".join(problems),
                    code="required" if missing else "value",
                    expression=(node.path,),
                )
            )
    if finished and (level.parent is None or tree.enabled(level.parent)):
        context = () if level.parent is None else (*level.parent.ancestors, level.parent)
        for definition in level.definitions:
            if definition.get("required") is not True or definition.get("linkId") in seen:
                continue
            if definition.get("type") == "display" or not tree.conditions_hold(definition, context):
                continue
            issues.append(
                Issue(
                    f"Required item {_label(definition)} of {url} is missing",
                    code="required",
                    expression=(f"{level.path}.item.where(linkId='{definition.get('linkId')}')",),
                )
            )
    return issues


def response_issues(
    questionnaire: dict[str, Any],
    response: dict[str, Any],
    value_sets: Mapping[str, Codes | None] | None = None,
) -> list[Issue]:
    """The problems of `response` against `questionnaire`, one issue per item at fault.

    `value_sets` holds the expansion of each answerValueSet (None, or absent, for one that
    could not be expanded: its answers are then not checked)."""
    url = str(questionnaire.get("url") or f"Questionnaire/{questionnaire.get('id')}")
    finished = response.get("status") in _FINISHED
    tree = ResponseTree(questionnaire, response)
    issues: list[Issue] = []
    for level in tree.levels:
        issues.extend(_level_issues(tree, level, url, finished, value_sets or {}))
    return issues
