"""An HL7 v2 message as the mapping reads it: parsed by python-hl7, each field seen as
repetitions of components of subcomponents, unescaped (HL7 v2.x chapter 2, 2.5-2.7).

Field numbers are the standard's: `field("PID", 3)` is PID-3, `field("MSH", 9)` MSH-9.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import hl7

__all__ = ["SUPPORTED_VERSIONS", "Field", "Segment", "V2Error", "V2Message", "parse_message"]

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")


class V2Error(Exception):
    """What is wrong with a message, as an ACK's ERR segment says it: the acknowledgment
    code (AE: the content is in error; AR: the message is refused as such), the HL7 error
    code (table 0357), and where (segment, its sequence, field)."""

    def __init__(
        self,
        text: str,
        *,
        ack: str = "AE",
        code: str = "207",
        segment: str | None = None,
        sequence: int = 1,
        field: int | None = None,
    ) -> None:
        super().__init__(text)
        self.text = text
        self.ack = ack
        self.code = code
        self.segment = segment
        self.sequence = sequence
        self.field = field


Subcomponents = list[str]
Repetition = list[Subcomponents]


@dataclass(frozen=True, slots=True)
class Field:
    """One field: its repetitions, each a list of components, each a list of subcomponents."""

    repetitions: list[Repetition]

    def __bool__(self) -> bool:
        return any(any(s for s in c) for r in self.repetitions for c in r)

    def rep(self, index: int = 0) -> Repetition:
        return self.repetitions[index] if index < len(self.repetitions) else []

    def component(self, number: int, rep: int = 0, sub: int = 1) -> str:
        """Component `number` (1-based) of repetition `rep`, subcomponent `sub`; '' if absent."""
        return component(self.rep(rep), number, sub)

    @property
    def value(self) -> str:
        return self.component(1)


def component(repetition: Repetition, number: int, sub: int = 1) -> str:
    if number - 1 >= len(repetition):
        return ""
    subs = repetition[number - 1]
    return subs[sub - 1] if sub - 1 < len(subs) else ""


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    sequence: int  # 1 for the first segment of its name in the message, 2 for the next...
    _raw: Any
    _message: Any

    def field(self, number: int) -> Field:
        try:
            raw = self._raw[number]
        except IndexError:
            return Field([])
        return Field(_field(raw, self._message))

    def __getitem__(self, number: int) -> Field:
        return self.field(number)


def _leaf(value: Any, message: Any) -> str:
    text = str(value)
    return str(message.unescape(text)) if "\\" in text else text


def _component(value: Any, message: Any) -> Subcomponents:
    if isinstance(value, str):
        return [_leaf(value, message)]
    return [_leaf(s, message) for s in value]


def _repetition(value: Any, message: Any) -> Repetition:
    if isinstance(value, str):
        return [[_leaf(value, message)]]
    return [_component(c, message) for c in value]


def _field(value: Any, message: Any) -> list[Repetition]:
    if isinstance(value, str):
        return [[[_leaf(value, message)]]]
    if all(isinstance(item, str) for item in value):
        return [[[_leaf("".join(value), message)]]] if value else []
    return [_repetition(item, message) for item in value]


class V2Message:
    def __init__(self, parsed: Any) -> None:
        self._parsed = parsed
        self.segments: list[Segment] = []
        counts: dict[str, int] = {}
        for raw in parsed:
            name = str(raw[0]).strip()
            counts[name] = counts.get(name, 0) + 1
            self.segments.append(Segment(name, counts[name], raw, parsed))

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def first(self, name: str) -> Segment | None:
        found = self.all(name)
        return found[0] if found else None

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    @property
    def control_id(self) -> str:
        return self.msh[10].value

    @property
    def version(self) -> str:
        return self.msh[12].value

    @property
    def message_type(self) -> tuple[str, str]:
        """(MSH-9.1, MSH-9.2): ('ADT', 'A01')."""
        kind = self.msh[9]
        return kind.component(1), kind.component(2)


def parse_message(raw: str) -> V2Message:
    """Parse ER7 text (segments ended by CR; LF and CRLF are accepted too). A message that
    does not start with an MSH segment is refused (AR)."""
    text = raw.replace("\r\n", "\r").replace("\n", "\r").strip("\r\x00 \t")
    if not text.startswith("MSH") or len(text) < 8:
        raise V2Error("The message does not start with an MSH segment", ack="AR", code="100")
    try:
        parsed = hl7.parse(text)
    except Exception as error:  # the parser's own errors are plain ValueError/IndexError
        raise V2Error(
            f"The message cannot be parsed ({type(error).__name__})", ack="AR", code="100"
        ) from error
    return V2Message(parsed)
