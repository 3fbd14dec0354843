"""The parameters of a history interaction (https://hl7.org/fhir/R4B/http.html#history):
`_since`, `_at`, `_count` and the server's own paging `_cursor`, parsed alike for every
type (interactions/history.py) and for AuditEvents (interactions/audit_history.py)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cmfhir.errors import BadRequest
from cmfhir.resources.index_values import date_range
from cmfhir.search.parse import parse_instant

__all__ = ["HistoryParams", "decode_cursor", "encode_cursor", "history_params"]

CursorItem = datetime | int


@dataclass(slots=True)
class HistoryParams:
    count: int
    since: datetime | None = None
    at: tuple[datetime, datetime] | None = None
    cursor: str | None = None  # as sent; `decode_cursor` reads it
    echo: list[tuple[str, str]] = field(default_factory=list)  # every parameter but `_cursor`


def history_params(
    params: list[tuple[str, str]], default_count: int, max_count: int
) -> HistoryParams:
    out = HistoryParams(count=default_count)
    for name, value in params:
        if name == "_cursor":
            out.cursor = value
            continue
        out.echo.append((name, value))
        if name == "_since":
            out.since = parse_instant(name, value)
        elif name == "_at":
            parse_instant(name, value)  # the same checks and message as `_since`
            out.at = date_range(value)
        elif name == "_count":
            out.count = _count(value, max_count)
    return out


def _count(value: str, max_count: int) -> int:
    # isascii: isdigit() also takes digits int() refuses (`²`); a number of thousands of
    # digits int() refuses too, and it is past the cap anyway.
    digits = value.lstrip("0")
    if not (value.isascii() and value.isdigit()) or not digits:
        raise BadRequest(f"_count '{value}' must be a positive integer", expression=["_count"])
    if len(digits) > len(str(max_count)):
        return max_count
    return min(int(digits), max_count)


def encode_cursor(*items: CursorItem) -> str:
    raw = json.dumps([i.isoformat() if isinstance(i, datetime) else i for i in items]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, kinds: tuple[type[datetime] | type[int], ...]) -> tuple[Any, ...]:
    """The items `encode_cursor` wrote, of these kinds. A forged cursor fails in any of
    these ways: not base64 or JSON, another shape, `1e999` (int(inf) overflows), a time
    without a zone, or nested past the JSON decoder's recursion limit."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(raw, list) or len(raw) != len(kinds):
            raise ValueError("another shape of cursor")
        out: list[CursorItem] = []
        for kind, item in zip(kinds, raw, strict=True):
            if kind is datetime:
                moment = datetime.fromisoformat(item)
                if moment.tzinfo is None:
                    raise ValueError("cursor time without a zone")
                out.append(moment)
            else:
                out.append(int(item))
        return tuple(out)
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise BadRequest("Invalid paging cursor", expression=["_cursor"]) from error
