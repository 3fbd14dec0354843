"""The subset of FHIRPath (https://hl7.org/fhirpath/) that search-parameter expressions use,
parsed into a small tree: member paths, indexes, unions, `where`/`as`/`ofType`/`exists`
calls, comparisons and type operators. fhirpath.py compiles the tree; anything else raises
`Unsupported` and goes to the general FHIRPath engine."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = [
    "Binary",
    "Call",
    "Chain",
    "Index",
    "Literal",
    "Member",
    "Parser",
    "TypeOp",
    "Unsupported",
]


class Unsupported(Exception):
    """The expression leaves the fast-path subset; fhirpathpy evaluates it."""


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+(?:\.\d+)?)|(?P<id>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<bt>`[^`]+`)|(?P<op>!=|[.()|\[\]=,]))"
)


def _tokenize(expression: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = expression.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise Unsupported(text[pos:])
        kind = match.lastgroup
        assert kind is not None
        value = match.group(kind)
        if kind == "bt":
            kind, value = "id", value[1:-1]
        tokens.append((kind, value))
        pos = match.end()
    return tokens


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    choice: bool | None = None  # `name[x]`: set by _resolve_types


@dataclass(frozen=True, slots=True)
class Index:
    index: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Chain:
    """Steps applied to the input collection; `root` is a leading type name (`Patient.`)."""

    root: str | None
    steps: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # "|", "and", "=", "!="
    left: Any
    right: Any


@dataclass(frozen=True, slots=True)
class TypeOp:
    op: str  # "as", "is"
    operand: Any
    type_name: str


class Parser:
    def __init__(self, expression: str) -> None:
        self.tokens = _tokenize(expression)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise Unsupported(f"expected {value!r}")
        self.pos += 1
        return token

    def at(self, value: str) -> bool:
        token = self.peek()
        return token is not None and token[1] == value and token[0] in ("op", "id")

    def parse(self) -> Any:
        node = self.and_expr(top=True)
        if self.peek() is not None:
            raise Unsupported("trailing input")
        return node

    def and_expr(self, top: bool) -> Any:
        node = self.equality(top)
        while self.at("and"):
            self.take()
            node = Binary("and", node, self.equality(top))
        return node

    def equality(self, top: bool) -> Any:
        node = self.union(top)
        if self.at("=") or self.at("!="):
            op = self.take()[1]
            node = Binary(op, node, self.union(top))
        return node

    def union(self, top: bool) -> Any:
        node = self.type_expr(top)
        while self.at("|"):
            self.take()
            node = Binary("|", node, self.type_expr(top))
        return node

    def type_expr(self, top: bool) -> Any:
        node = self.postfix(top)
        if self.at("as") or self.at("is"):
            op = self.take()[1]
            node = TypeOp(op, node, self.take()[1])
        return node

    def postfix(self, top: bool) -> Any:
        token = self.take()
        kind, value = token
        if kind == "str":
            return Literal(re.sub(r"\\(.)", r"\1", value[1:-1]))
        if kind == "num":
            return Literal(Decimal(value))
        if kind == "id" and value in ("true", "false"):
            return Literal(value == "true")
        if value == "(":
            inner = self.and_expr(top)
            self.take(")")
            if not self.at(".") and not self.at("["):
                return inner
            if not isinstance(inner, TypeOp | Chain):
                raise Unsupported("steps after a parenthesized expression")
            return self.steps(Chain(None, (inner,)))
        if kind != "id":
            raise Unsupported(value)
        if top and value[0].isupper():
            chain = Chain(value, ())
        elif self.at("("):
            chain = Chain(None, (self.call(value),))
        else:
            chain = Chain(None, (Member(value),))
        return self.steps(chain)

    def steps(self, chain: Chain) -> Chain:
        steps = list(chain.steps)
        while True:
            if self.at("."):
                self.take()
                kind, name = self.take()
                if kind != "id":
                    raise Unsupported(name)
                steps.append(self.call(name) if self.at("(") else Member(name))
            elif self.at("["):
                self.take()
                kind, number = self.take()
                if kind != "num" or not number.isdigit():
                    raise Unsupported(number)
                self.take("]")
                steps.append(Index(int(number)))
            else:
                return Chain(chain.root, tuple(steps))

    def call(self, name: str) -> Call:
        self.take("(")
        args: list[Any] = []
        if not self.at(")"):
            args.append(self.and_expr(top=False))
            while self.at(","):
                self.take()
                args.append(self.and_expr(top=False))
        self.take(")")
        return Call(name, tuple(args))
