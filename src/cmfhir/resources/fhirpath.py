"""FHIRPath for search-parameter expressions (https://hl7.org/fhirpath/N1/): a hand-written
evaluator for the subset the core definitions use, with `fhirpathpy` as the fallback.

The fast path covers member navigation over JSON (lists flattened, choice elements such as
`effective` found as `effectiveDateTime`...), unions, `as`/`ofType` on choice elements,
`where(...)` with `resolve() is Type`, equality and `exists()` criteria, `extension(url)`,
indexers, `exists()`, `empty()`, `first()`, `not()`, `and`, `=` and `!=`. Anything else
compiles through fhirpathpy (R4 model). An expression that fails on a resource (or does not
compile) raises `FhirPathError` naming the expression and the kind of error, never the
resource (no PHI): the indexer refuses the write rather than leave the resource out.

Deliberate differences from strict FHIRPath, chosen for indexing:
- `x as T` on a collection of several items filters them (as `ofType(T)` does) instead of
  failing; `as`/`ofType` are only understood on choice elements (`value as Quantity` reads
  `valueQuantity`), other uses go to the fallback.
- `resolve() is T` looks at the reference text (`T/id`, `.../T/id[/_history/n]`) or, when
  that says nothing (`urn:uuid:`, identifier-only), at `Reference.type`; it never fetches.
- `|` keeps duplicates (the indexer removes them); `extension(url)` returns every match.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

import fhirpathpy
from fhirpathpy.models import models as _fhirpath_models

from cmfhir.resources.fhirpath_syntax import (
    Binary,
    Call,
    Chain,
    Index,
    Literal,
    Member,
    Parser,
    TypeOp,
    Unsupported,
)

__all__ = [
    "Branch",
    "Extractor",
    "FhirPathError",
    "compile_on_type",
    "compile_path",
    "parse_reference",
    "reference_type",
    "required_keys",
    "split_union",
    "union_branches",
    "uses_fast_path",
]

logger = logging.getLogger(__name__)

Extractor = Callable[[dict[str, Any]], list[Any]]


class FhirPathError(ValueError):
    """An expression failed on an input; `cause` says how (an error type, never content)."""

    def __init__(self, expression: str, cause: str) -> None:
        super().__init__(f"FHIRPath {expression!r} failed: {cause}")
        self.expression = expression
        self.cause = cause


_Fn = Callable[[list[Any]], list[Any]]

_R4_MODEL: dict[str, Any] = _fhirpath_models["r4"]
_CHOICES: dict[str, list[str]] = _R4_MODEL["choiceTypePaths"]
_PATH_TYPES: dict[str, str] = _R4_MODEL["path2Type"]
_ELSEWHERE: dict[str, str] = _R4_MODEL["pathsDefinedElsewhere"]
_PARENTS: dict[str, str] = _R4_MODEL["type2Parent"]
# Paths of backbone elements (`Observation.component`): they have children but no type.
_BACKBONES = frozenset(
    path.rsplit(".", depth)[0]
    for path in (*_PATH_TYPES, *_CHOICES)
    for depth in range(1, path.count("."))
)
# Element names that are a choice `name[x]` somewhere: where the model cannot tell (a type
# it does not know, a relative path), only these pay for a key scan when absent.
_CHOICE_NAMES = frozenset(path.rsplit(".", 1)[1] for path in _CHOICES)
_TYPE_SUFFIXES = frozenset(t for types in _CHOICES.values() for t in types) | {
    "CodeableReference",
    "RatioRange",
}
_ANY_RESOURCE = ("Resource", "DomainResource")
# `Type/id` at the end of a reference, optionally followed by `/_history/version`.
_REFERENCE_TAIL = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


def parse_reference(text: str) -> tuple[str | None, str | None, str, str | None]:
    """(type, id, url, version) of a reference or canonical: `Patient/1`,
    `http://x/fhir/Patient/1/_history/2`, `http://x/ValueSet/vs|1.0`, `urn:uuid:...`.
    Type and id are None unless the url ends with `Type/id` (then `/_history/n`)."""
    url, _, version = text.partition("|")
    match = None if url.startswith("urn:") else _REFERENCE_TAIL.search(url)
    if match is None:
        return None, None, url, version or None
    return match.group(1), match.group(2), url, version or None


def reference_type(reference: Any) -> str | None:
    """The resource type a Reference points to, read from its text or else its `type`."""
    if not isinstance(reference, dict):
        return None
    text = reference.get("reference")
    if isinstance(text, str) and not text.startswith("#"):
        kind = parse_reference(text)[0]
        if kind is not None:
            return kind
    kind = reference.get("type")
    if isinstance(kind, str):
        # Reference.type is a type name or the URL of its StructureDefinition.
        return kind.rsplit("/", 1)[-1]
    return None


def split_union(expression: str) -> list[str]:
    """Split on the `|` operators that are not inside parentheses, brackets or strings."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(expression):
        if ch == "'" and (i == 0 or expression[i - 1] != "\\"):
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


# --- compiling the tree into closures over collections ------------------------------------


def _lookup(kind: str, name: str) -> tuple[bool, str | None] | None:
    """Whether `kind.name` is a choice element, and the type (or backbone path) it holds;
    None when the R4 model does not know the path."""
    current: str | None = kind
    while current is not None:
        path = f"{current}.{name}"
        path = _ELSEWHERE.get(path, path)
        if path in _CHOICES:
            return True, None
        if path in _PATH_TYPES:
            return False, _PATH_TYPES[path]
        if path in _BACKBONES:
            return False, path
        current = _PARENTS.get(current)
    return None


def _type_name(node: Any) -> str:
    if isinstance(node, Chain) and node.root is None and len(node.steps) == 1:
        step = node.steps[0]
        if isinstance(step, Member):
            return step.name
    raise Unsupported(f"type name {node!r}")


# Steps after which the items keep their type.
_SAME_TYPE = frozenset({"where", "first"})


def _resolve_types(chain: Chain) -> Chain:
    """Mark which members are choice elements (from the model along the path, else by name)
    and turn `.as(T)`/`.ofType(T)` after one into a read of its typed key (`valueQuantity`)."""
    kind = chain.root if chain.root in _PARENTS or chain.root == "Resource" else None
    steps: list[Any] = []
    for step in chain.steps:
        if isinstance(step, Member):
            if step.name[0].isupper():  # a type name where an element belongs
                raise Unsupported(step.name)
            found = _lookup(kind, step.name) if kind else None
            choice, kind = found if found else (step.name in _CHOICE_NAMES, None)
            steps.append(Member(step.name, choice))
        elif isinstance(step, Call) and step.name in ("as", "ofType") and len(step.args) == 1:
            type_name = _type_name(step.args[0])
            previous = steps[-1] if steps else None
            if not isinstance(previous, Member) or not previous.choice:
                raise Unsupported(f"as/ofType on {previous!r}")
            key = previous.name + type_name[0].upper() + type_name[1:]
            steps[-1] = Member(key, False)
            kind = type_name
        else:
            if not isinstance(step, Index) and not (
                isinstance(step, Call) and step.name in _SAME_TYPE
            ):
                kind = None
            steps.append(step)
    return Chain(chain.root, tuple(steps))


def _retype(chain: Chain, type_name: str) -> Chain:
    """`(chain as T)`."""
    as_type = Call("as", (Chain(None, (Member(type_name),)),))
    return _resolve_types(Chain(chain.root, (*chain.steps, as_type)))


def _choice_value(item: dict[str, Any], name: str) -> Any:
    """The value of choice element `name[x]`: the key `name` + a type suffix."""
    size = len(name)
    for key, value in item.items():
        if key.startswith(name) and key[size:] in _TYPE_SUFFIXES:
            return value
    return None


def _members(root: str | None, members: list[Member]) -> _Fn:
    """`Type.a.b.c`, the most common form, in one loop (no call per step); lists flatten."""
    steps = tuple((m.name, bool(m.choice)) for m in members)

    def member_path(items: list[Any]) -> list[Any]:
        if root is not None:
            if len(items) == 1:  # one resource, as the indexer passes it
                item = items[0]
                if type(item) is not dict or item.get("resourceType") != root:
                    return []
            else:
                items = [i for i in items if type(i) is dict and i.get("resourceType") == root]
        for name, choice in steps:
            if not items:
                return items
            found: list[Any] = []
            for item in items:
                if type(item) is not dict:
                    continue
                value = item.get(name)
                if value is None:
                    if not choice:
                        continue
                    value = _choice_value(item, name)
                    if value is None:
                        continue
                if type(value) is list:
                    found.extend(value)
                else:
                    found.append(value)
            items = found
        return items

    return member_path


def _singleton_equal(left: list[Any], right: list[Any]) -> list[Any]:
    if len(left) != 1 or len(right) != 1:
        return []
    a, b = left[0], right[0]
    if (type(a) is bool) != (type(b) is bool):
        return [False]
    return [a == b]


def _truth(items: list[Any]) -> bool | None:
    """Singleton evaluation of a collection as a boolean; several items count as empty."""
    if len(items) != 1:
        return None
    return items[0] if type(items[0]) is bool else True


def _compile(node: Any) -> _Fn:
    if isinstance(node, Literal):
        constant = [node.value]
        return lambda items: constant
    if isinstance(node, Chain):
        return _compile_chain(node)
    if isinstance(node, TypeOp):
        return _compile_type_op(node)
    if isinstance(node, Binary):
        left, right = _compile(node.left), _compile(node.right)
        if node.op == "|":
            return lambda items: left(items) + right(items)
        if node.op == "=":
            return lambda items: _singleton_equal(left(items), right(items))
        if node.op == "!=":
            return lambda items: [not r for r in _singleton_equal(left(items), right(items))]
        if node.op == "and":

            def both(items: list[Any]) -> list[Any]:
                a, b = _truth(left(items)), _truth(right(items))
                if a is False or b is False:
                    return [False]
                return [True] if a and b else []

            return both
    raise Unsupported(repr(node))


def _compile_type_op(node: TypeOp) -> _Fn:
    operand = node.operand
    if node.op == "as" and isinstance(operand, Chain):
        return _compile_resolved(_retype(operand, node.type_name))
    if (
        node.op == "is"
        and isinstance(operand, Chain)
        and operand.root is None
        and operand.steps == (Call("resolve", ()),)
    ):
        wanted = node.type_name
        return lambda items: [reference_type(i) == wanted for i in items] if items else []
    raise Unsupported(repr(node))


# Functions with a value for an empty input; other steps map empty to empty.
_ON_EMPTY = frozenset({"exists", "empty", "not"})


def _compile_chain(chain: Chain) -> _Fn:
    return _compile_resolved(_resolve_types(chain))


def _compile_resolved(chain: Chain) -> _Fn:
    steps = chain.steps
    root = chain.root
    if all(isinstance(step, Member) for step in steps):
        return _members(None if root in _ANY_RESOURCE else root, list(steps))
    fns = [_compile_step(step) for step in steps]
    if root is not None and root not in _ANY_RESOURCE:

        def of_root_type(items: list[Any]) -> list[Any]:
            return [i for i in items if type(i) is dict and i.get("resourceType") == root]

        fns.insert(0, of_root_type)
    if len(fns) == 1:
        return fns[0]
    if any(isinstance(s, Call) and s.name in _ON_EMPTY for s in steps):

        def run_all(items: list[Any]) -> list[Any]:
            for fn in fns:
                items = fn(items)
            return items

        return run_all

    def run(items: list[Any]) -> list[Any]:
        for fn in fns:
            if not items:
                return items
            items = fn(items)
        return items

    return run


def _compile_step(step: Any) -> _Fn:
    if isinstance(step, Member):
        return _members(None, [step])
    if isinstance(step, Index):
        position = step.index
        return lambda items: items[position : position + 1]
    if isinstance(step, TypeOp | Binary | Chain | Literal):
        return _compile(step)
    if isinstance(step, Call):
        return _compile_call(step)
    raise Unsupported(repr(step))


def _compile_call(call: Call) -> _Fn:
    name, args = call.name, call.args
    if name == "where" and len(args) == 1:
        criterion = _compile(args[0])
        return lambda items: [i for i in items if criterion([i]) == [True]]
    if name == "extension" and len(args) == 1 and isinstance(args[0], Literal):
        url = args[0].value

        def extension(items: list[Any]) -> list[Any]:
            out: list[Any] = []
            for item in items:
                found = item.get("extension") if type(item) is dict else None
                if type(found) is list:
                    out.extend(e for e in found if type(e) is dict and e.get("url") == url)
            return out

        return extension
    if not args:
        if name == "exists":
            return lambda items: [bool(items)]
        if name == "empty":
            return lambda items: [not items]
        if name == "first":
            return lambda items: items[:1]
        if name == "not":
            return lambda items: (
                [not items[0]] if len(items) == 1 and type(items[0]) is bool else []
            )
    raise Unsupported(f"{name}()")


def _first_keys(node: Any) -> frozenset[str] | None:
    """Keys of the input object one of which must be present for a non-empty result, or
    None when the expression can yield something without them (`exists()`, literals)."""
    if isinstance(node, TypeOp) and node.op == "as" and isinstance(node.operand, Chain):
        return _first_keys(_retype(node.operand, node.type_name))
    if isinstance(node, Binary) and node.op == "|":
        left, right = _first_keys(node.left), _first_keys(node.right)
        return None if left is None or right is None else left | right
    if not isinstance(node, Chain) or not node.steps:
        return None
    chain = _resolve_types(node)
    if any(
        isinstance(s, Binary | Literal) or (isinstance(s, Call) and s.name in _ON_EMPTY)
        for s in chain.steps
    ):
        return None
    first = chain.steps[0]
    if isinstance(first, Member) and not first.choice:
        return frozenset({first.name})
    if isinstance(first, Call) and first.name == "extension":
        return frozenset({"extension"})
    if isinstance(first, TypeOp):
        return _first_keys(first)
    return None


# --- public API ---------------------------------------------------------------------------


def _fast(expression: str) -> _Fn | None:
    try:
        return _compile(Parser(expression).parse())
    except Unsupported:
        return None


def required_keys(expression: str) -> frozenset[str] | None:
    """Top-level keys of the resource one of which must be present for the expression to
    yield anything (`Patient.name | Patient.alias` → {name, alias}); None if unknown. The
    indexer skips an expression whose keys are all absent without evaluating it."""
    try:
        tree = Parser(expression).parse()
        _compile(tree)
    except Unsupported:
        return None
    return _first_keys(tree)


def uses_fast_path(expression: str) -> bool:
    """Whether `compile_path` evaluates this expression without fhirpathpy."""
    return _fast(expression) is not None


def _plain(value: Any) -> Any:
    """fhirpathpy wraps dates and quantities in its own types; indexers want JSON values."""
    if isinstance(value, str | bool | int | float | Decimal | dict | list) or value is None:
        return value
    return str(value)


_warned: set[str] = set()


def _failed(expression: str, cause: str) -> FhirPathError:
    """The error for a failed evaluation, logged (expression and cause only, no content)
    the first time each expression fails, so operators see it beside the client's 422."""
    if expression not in _warned:
        _warned.add(expression)
        logger.warning("FHIRPath %r failed on a resource (%s)", expression, cause)
    return FhirPathError(expression, cause)


def _fallback(expression: str) -> Extractor:
    try:
        compiled = fhirpathpy.compile(expression, model=_R4_MODEL)
    except Exception as error:
        cause = f"the expression does not compile ({type(error).__name__})"
        logger.warning("FHIRPath expression does not compile: %s", expression)

        def never(resource: dict[str, Any]) -> list[Any]:
            raise FhirPathError(expression, cause)

        return never

    def evaluate(resource: dict[str, Any]) -> list[Any]:
        try:
            values = compiled(resource, {})
        except Exception as error:
            # The message may quote the resource (PHI): only the error type is kept.
            raise _failed(expression, type(error).__name__) from None
        # Some fhirpathpy functions report errors as a value rather than raise.
        if any(type(v) is dict and v.get("$status") == "error" for v in values):
            raise _failed(expression, "fhirpathpy returned an error value")
        return [_plain(v) for v in values]

    return evaluate


class Branch(NamedTuple):
    """One operand of a union: `base` alone, or `base.where(resolve() is resolve_type)`."""

    base: str
    resolve_type: str | None


def _leaves(node: Any) -> list[Any]:
    if isinstance(node, Binary) and node.op == "|":
        return [*_leaves(node.left), *_leaves(node.right)]
    return [node]


_RESOLVE_SUFFIX = re.compile(r"\.where\(\s*resolve\(\)\s+is\s+([A-Za-z]+)\s*\)$")


def _branch(part: str, leaf: Any) -> Branch:
    match = _RESOLVE_SUFFIX.search(part)
    if match is not None and isinstance(leaf, Chain) and leaf.steps:
        base = part[: match.start()]
        try:
            same = Parser(base).parse() == Chain(leaf.root, leaf.steps[:-1])
        except Unsupported:
            same = False
        if same:
            return Branch(base, match.group(1))
    return Branch(part, None)


@lru_cache(maxsize=4096)
def union_branches(expression: str) -> tuple[Branch, ...] | None:
    """The operands of a top-level union, in order, when evaluating each alone and
    concatenating the results gives what `compile_path(expression)` gives: every operand a
    path (`A.b.c`, `(A.b as T)`, `A.b.where(resolve() is T)`) on the fast path. None for
    anything else (the expression is then evaluated whole).

    The indexer evaluates an operand shared by several parameters of a type once per
    resource (`Observation.code` in `code` and `combo-code`), and `x.where(resolve() is T)`
    by filtering the values of `x`, which `subject` has already read."""
    try:
        leaves = _leaves(Parser(expression).parse())
        parts = split_union(expression)
        if len(parts) != len(leaves):
            return None
        branches = []
        for part, leaf in zip(parts, leaves, strict=True):
            if not isinstance(leaf, Chain | TypeOp) or Parser(part).parse() != leaf:
                return None
            if isinstance(leaf, TypeOp) and leaf.op != "as":
                return None
            _compile(leaf)
            branches.append(_branch(part, leaf))
    except Unsupported:
        return None
    return tuple(branches)


def _direct(names: tuple[tuple[str, bool], ...]) -> Extractor:
    """A member path read straight off the resource (no type test, no error wrapper: reading
    dicts cannot fail); the values of the first member are the resource's own list."""
    if len(names) == 1 and not names[0][1]:
        name = names[0][0]

        def one(resource: dict[str, Any]) -> list[Any]:
            value = resource.get(name)
            if value is None:
                return []
            return value if type(value) is list else [value]

        return one
    path = _members(None, [Member(name, choice) for name, choice in names])
    return lambda resource: path([resource])


@lru_cache(maxsize=8192)
def compile_on_type(expression: str) -> Extractor:
    """`compile_path(expression)` for an input known to be a resource of the expression's
    root type (the indexer's plan is per type): a path of members (`Observation.code`,
    `(Observation.value as Quantity)`) reads the dict directly. The values are the same;
    they may share lists with the resource, so callers must not change them."""
    try:
        node = Parser(expression).parse()
        if isinstance(node, TypeOp) and node.op == "as" and isinstance(node.operand, Chain):
            node = _retype(node.operand, node.type_name)
        elif isinstance(node, Chain):
            node = _resolve_types(node)
        else:
            return compile_path(expression)
    except Unsupported:
        return compile_path(expression)
    steps = node.steps
    if node.root in _ANY_RESOURCE or node.root not in _PARENTS or not steps:
        return compile_path(expression)
    if not all(isinstance(step, Member) for step in steps):
        return compile_path(expression)
    return _direct(tuple((m.name, bool(m.choice)) for m in steps))


@lru_cache(maxsize=8192)
def compile_path(expression: str) -> Extractor:
    """Compile a FHIRPath expression into `resource -> values` (JSON values, lists flattened).

    A leading type name (`Patient.name`) selects resources of that type; `Resource.` and
    `DomainResource.` select any resource; a lowercase start is relative to the input.
    The extractor raises FhirPathError when the expression fails on its input.
    """
    fast = _fast(expression)
    if fast is None:
        return _fallback(expression)
    fn = fast

    def extract(resource: dict[str, Any]) -> list[Any]:
        try:
            return fn([resource])
        except Exception as error:  # content of a shape no validation refused
            raise _failed(expression, type(error).__name__) from None

    return extract
