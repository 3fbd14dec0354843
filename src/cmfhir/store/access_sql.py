"""The access predicate (store/access.py) as SQL text, for the statements written as text
(store/search_sql.py, store/includes.py).

There is one description of the rules, `visible`: here it is compiled by SQLAlchemy for
PostgreSQL once per shape of principal (kind and scopes, and whether it is a practitioner
or a member, not which one) and permission, every value left a bound parameter; each
principal's own ids take the place of stand-ins among the values. Each use names the
resource row it applies to and renumbers the parameters after the statement's own, so
principals of the same shape give the same text (asyncpg prepares it once per connection)
and a principal's values travel as parameters. An unrestricted principal adds no
condition at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, literal_column, select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from cmfhir.auth.principal import Principal
from cmfhir.store.access import visible
from cmfhir.store.schema import resource

__all__ = ["Condition", "compile_count", "visible_condition"]

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]
_PLACEHOLDER = re.compile(r"\$(\d+)")
# The alias the predicate is compiled for; each use puts its own in its place.
_ROW = "access_row"
_HEAD = f"SELECT 1 \nFROM resource AS {_ROW} \nWHERE "


@dataclass(frozen=True, slots=True)
class Condition:
    """A condition as text around its parameters: `parts[0]`, value `slots[0]`,
    `parts[1]`, ..., `parts[-1]`."""

    parts: tuple[str, ...]
    slots: tuple[int, ...]
    values: tuple[Any, ...]

    def render_into(self, alias: str, args: list[Any]) -> str:
        """The condition on the `resource` row `alias`, its values appended to `args` (a
        statement's values so far, `$n` the n-th). The text is made once per shape, row
        alias and place in a statement: binding a `user/` principal's few hundred values
        one by one cost a care manager's search more than the rest of its SQL."""
        text = _rendered(self.parts, self.slots, alias, len(args))
        args.extend(self.values)
        return text


@lru_cache(maxsize=1024)
def _rendered(parts: tuple[str, ...], slots: tuple[int, ...], alias: str, before: int) -> str:
    out = [parts[0]]
    for slot, part in zip(slots, parts[1:], strict=True):
        out.append(f"${before + slot + 1}")
        out.append(part)
    return "".join(out).replace(f"{_ROW}.", f"{alias}.")


# What differs between principals of one shape (the same kind and scopes): who they are.
# The predicate is compiled once per shape with these stand-ins as the practitioner and
# member ids, and each principal's own ids are put in their place among the values.
_PRACTITIONER = "\x1fcmfhir:practitioner\x1f"
_MEMBER = "\x1fcmfhir:member\x1f"


def _shape(principal: Principal) -> Principal:
    """The principal with its identities replaced by the stand-ins: what `visible` builds
    for it depends on its kind and scopes and on which identities it has, not on whose."""
    fhir_user = principal.fhir_user
    if fhir_user is not None and "/" in fhir_user:
        kind, _, _ = fhir_user.partition("/")
        fhir_user = f"{kind}/{_PRACTITIONER if kind == 'Practitioner' else _MEMBER}"
    return Principal(
        principal.kind,
        fhir_user=fhir_user,
        patient=_MEMBER if principal.patient else None,
        scopes=principal.scopes,
    )


def visible_condition(principal: Principal | None, permission: str) -> Condition | None:
    """`visible(principal, row, permission)` as text; None when the principal sees
    everything."""
    if principal is None:
        return _compiled(None, permission)
    if principal.unrestricted:
        return None
    return _narrowed(principal, permission)


@lru_cache(maxsize=1024)
def _narrowed(principal: Principal, permission: str) -> Condition:
    """The condition of one restricted principal: its shape's, with its own ids among the
    values. Kept per principal: putting the ids in place walks every value (a `user/`
    principal's predicate has a few hundred), about a fifth of a care manager's search."""
    shape = _compiled(_shape(principal), permission)
    own = {_PRACTITIONER: principal.practitioner, _MEMBER: principal.member}
    values = tuple(own[v] if isinstance(v, str) and v in own else v for v in shape.values)
    for value in values:
        # A stand-in inside another value would be a value made from an identity: this
        # module would have to know how. None is, today.
        if isinstance(value, str) and "\x1fcmfhir:" in value:
            raise RuntimeError("An identity of the principal is bound in a derived value")
    return Condition(shape.parts, shape.slots, values)


def compile_count() -> int:
    """How many times the predicate was compiled in this process (once per shape of
    principal and permission)."""
    return _compiled.cache_info().misses


@lru_cache(maxsize=256)
def _compiled(principal: Principal | None, permission: str) -> Condition:
    """The predicate of one shape of principal (see `_shape`), compiled by SQLAlchemy:
    a few hundred milliseconds for a `user/` principal, so once per shape and process."""
    row = resource.alias(_ROW)
    # Compiled inside a SELECT from the row, so that the predicate's subqueries correlate
    # to it (compiled alone, each would add the table to its own FROM).
    statement: Select[Any] = (
        select(literal_column("1")).select_from(row).where(visible(principal, row, permission))
    )
    compiled = statement.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
    text = compiled.string
    # Parameters are found by their `$n`: a quoted literal could hold one.
    if not text.startswith(_HEAD) or "'" in text:
        raise RuntimeError(f"Unexpected text of the access predicate: {text[:200]!r}")
    params = compiled.construct_params()
    values = tuple(params[name] for name in compiled.positiontup or ())
    pieces = _PLACEHOLDER.split(text[len(_HEAD) :])
    slots = tuple(int(n) - 1 for n in pieces[1::2])
    if any(slot >= len(values) for slot in slots) or _ROW in "".join(pieces[0::2]).replace(
        f"{_ROW}.", ""
    ):
        raise RuntimeError(f"Unexpected text of the access predicate: {text[:200]!r}")
    # Parenthesized: the predicate is ANDed beside other conditions and may be an OR.
    between = list(pieces[0::2])
    between[0] = "(" + between[0]
    between[-1] += ")"
    return Condition(tuple(between), slots, values)
