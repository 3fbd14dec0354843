"""A QuestionnaireResponse's items against its Questionnaire's (https://hl7.org/fhir/R4/questionnaire.html):
which Questionnaire item each response item answers, and whether an item is enabled
(`enableWhen`/`enableBehavior`, https://hl7.org/fhir/R4/questionnaire-definitions.html#Questionnaire.item.enableWhen).

The response is read as a tree of `Node`s. A question's answers are looked up as SDC says a
form filler does: in the nearest enclosing response item that holds the question (so a
condition inside a repeating group reads the answer of that repetition), else anywhere in
the response. An item that is not enabled counts as unanswered, and so do its descendants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = [
    "MAX_CHAIN",
    "Level",
    "Node",
    "ResponseTree",
    "answer_value",
    "items_by_link_id",
    "same_value",
]

# Items enabled by items enabled by items...: how far a chain is followed (the stack).
MAX_CHAIN = 64


def answer_value(answer: Any) -> tuple[str, Any] | None:
    """The `value[x]` of an answer (or an enableWhen's `answer[x]`, an answerOption's
    `value[x]`): its key and value, or None."""
    if not isinstance(answer, dict):
        return None
    for key, value in answer.items():
        if key.startswith(("value", "answer")) and key not in ("answer",):
            return key, value
    return None


def _kind(key: str) -> str:
    """`valueCoding` and `answerCoding` → `Coding`."""
    return key.removeprefix("value").removeprefix("answer")


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return Decimal(str(value))


def same_value(kind: str, left: Any, right: Any) -> bool:
    """Whether two values of datatype `kind` are the same answer: Codings by system and code
    (a missing system matches any), Quantities by value and unit, References by reference."""
    if kind == "Coding":
        if not isinstance(left, dict) or not isinstance(right, dict):
            return False
        if left.get("code") != right.get("code"):
            return False
        systems = (left.get("system"), right.get("system"))
        return None in systems or systems[0] == systems[1]
    if kind == "Quantity":
        if not isinstance(left, dict) or not isinstance(right, dict):
            return False
        unit = (left.get("code") or left.get("unit"), right.get("code") or right.get("unit"))
        return _number(left.get("value")) == _number(right.get("value")) and unit[0] == unit[1]
    if kind == "Reference":
        if not isinstance(left, dict) or not isinstance(right, dict):
            return False
        return bool(left.get("reference")) and left.get("reference") == right.get("reference")
    numbers = (_number(left), _number(right))
    if None not in numbers:
        return numbers[0] == numbers[1]
    return bool(left == right)


def _ordered(kind: str, left: Any, right: Any) -> int | None:
    """-1, 0 or 1 comparing two values, or None when they have no order."""
    if kind == "Quantity" and isinstance(left, dict) and isinstance(right, dict):
        if (left.get("code") or left.get("unit")) != (right.get("code") or right.get("unit")):
            return None
        left, right = left.get("value"), right.get("value")
    numbers = (_number(left), _number(right))
    if numbers[0] is not None and numbers[1] is not None:
        return (numbers[0] > numbers[1]) - (numbers[0] < numbers[1])
    # date, dateTime, time and string: ISO forms of the same precision order as text.
    if isinstance(left, str) and isinstance(right, str) and len(left) == len(right):
        return (left > right) - (left < right)
    if isinstance(left, str) and isinstance(right, str) and kind == "String":
        return (left > right) - (left < right)
    return None


def _holds(operator: str, kind: str, answer: Any, expected: Any) -> bool:
    if operator == "=":
        return same_value(kind, answer, expected)
    if operator == "!=":
        return not same_value(kind, answer, expected)
    order = _ordered(kind, answer, expected)
    if order is None:
        return False
    return {">": order > 0, "<": order < 0, ">=": order >= 0, "<=": order <= 0}.get(operator, False)


def items_by_link_id(items: Any) -> dict[str, dict[str, Any]]:
    """Every Questionnaire item, at any depth, by linkId."""
    found: dict[str, dict[str, Any]] = {}
    stack = list(items) if isinstance(items, list) else []
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            link_id = item.get("linkId")
            if isinstance(link_id, str):
                found.setdefault(link_id, item)
            children = item.get("item")
            if isinstance(children, list):
                stack.extend(children)
    return found


@dataclass(eq=False)
class Node:
    """One response item: what it answers (None when its linkId is not in the Questionnaire
    at that place), its ancestors (outermost first) and where it is."""

    item: dict[str, Any]
    definition: dict[str, Any] | None
    parent: Node | None
    path: str
    ancestors: tuple[Node, ...] = field(default=())

    @property
    def link_id(self) -> Any:
        return self.item.get("linkId")

    def answers(self) -> list[dict[str, Any]]:
        answers = self.item.get("answer")
        return [a for a in answers if isinstance(a, dict)] if isinstance(answers, list) else []


@dataclass(eq=False)
class Level:
    """One list of response items (the response's, a group's, or a question answer's), with
    the Questionnaire items that may appear in it."""

    path: str
    parent: Node | None
    definitions: list[dict[str, Any]]
    nodes: list[Node] = field(default_factory=list)


class ResponseTree:
    """A QuestionnaireResponse as Nodes, each matched to its Questionnaire item, with the
    enableWhen logic evaluated over it."""

    def __init__(self, questionnaire: dict[str, Any], response: dict[str, Any]) -> None:
        self.questionnaire = questionnaire
        self.definitions = items_by_link_id(questionnaire.get("item"))
        self.nodes: list[Node] = []
        self.levels: list[Level] = []
        self._by_link_id: dict[Any, list[Node]] = {}
        self._enabled: dict[int, bool] = {}
        self._evaluating: set[int] = set()
        self._build(response.get("item"), questionnaire.get("item"), None, "QuestionnaireResponse")

    def _build(self, items: Any, definitions: Any, parent: Node | None, path: str) -> None:
        given = definitions if isinstance(definitions, list) else []
        listed = [d for d in given if isinstance(d, dict)]
        level = Level(path, parent, listed)
        self.levels.append(level)
        if not isinstance(items, list):
            return
        here = {d.get("linkId"): d for d in listed}
        ancestors = () if parent is None else (*parent.ancestors, parent)
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            definition = here.get(item.get("linkId"))
            node = Node(item, definition, parent, f"{path}.item[{index}]", ancestors)
            self.nodes.append(node)
            level.nodes.append(node)
            if definition is None:
                continue  # what lies under an unknown item is not looked at
            self._by_link_id.setdefault(node.link_id, []).append(node)
            children = definition.get("item")
            if definition.get("type") == "group" or "item" in node.item:
                self._build(node.item.get("item"), children, node, node.path)
            if definition.get("type") == "group":
                continue
            for position, answer in enumerate(node.answers()):
                if children or "item" in answer:
                    self._build(
                        answer.get("item"), children, node, f"{node.path}.answer[{position}]"
                    )

    # -- enableWhen ---------------------------------------------------------------------------

    def _answers_of(self, link_id: str, context: tuple[Node, ...]) -> list[dict[str, Any]]:
        """The answers of the enabled response items for question `link_id`, looked up in
        the nearest enclosing item of `context` (innermost last) that holds it, else in the
        whole response."""
        candidates = self._by_link_id.get(link_id, [])
        for scope in reversed(context):
            inside = [n for n in candidates if scope in n.ancestors]
            if inside:
                candidates = inside
                break
        return [a for n in candidates if self.enabled(n) for a in n.answers()]

    def conditions_hold(self, definition: dict[str, Any], context: tuple[Node, ...]) -> bool:
        """Whether the enableWhen of `definition` holds for an item placed under `context`
        (its ancestors, outermost first)."""
        conditions = definition.get("enableWhen")
        if not isinstance(conditions, list) or not conditions:
            return True
        results = [self._condition(c, context) for c in conditions if isinstance(c, dict)]
        if definition.get("enableBehavior") == "any":
            return any(results)
        return all(results)

    def _condition(self, condition: dict[str, Any], context: tuple[Node, ...]) -> bool:
        question = condition.get("question")
        operator = condition.get("operator")
        expected = answer_value(
            {k: v for k, v in condition.items() if k not in ("question", "operator")}
        )
        if not isinstance(question, str) or expected is None:
            return False
        answers = self._answers_of(question, context)
        if operator == "exists":
            return bool(answers) == (expected[1] is True)
        kind = _kind(expected[0])
        for answer in answers:
            found = answer_value(answer)
            if (
                found is not None
                and _kind(found[0]) == kind
                and _holds(str(operator), kind, found[1], expected[1])
            ):
                return True
        return False

    def enabled(self, node: Node) -> bool:
        """Whether a response item is enabled: its parent is, and its enableWhen holds.
        A cycle of conditions (an item enabled by its own answer) counts as enabled."""
        key = id(node)
        known = self._enabled.get(key)
        if known is not None:
            return known
        if key in self._evaluating or node.definition is None:
            return True
        if len(self._evaluating) > MAX_CHAIN:
            return True  # a chain of conditions this long is not followed to its end
        self._evaluating.add(key)
        try:
            result = (node.parent is None or self.enabled(node.parent)) and self.conditions_hold(
                node.definition, (*node.ancestors,)
            )
        finally:
            self._evaluating.discard(key)
        self._enabled[key] = result
        return result
