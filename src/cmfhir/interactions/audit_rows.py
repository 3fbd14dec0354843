"""The rows of the trail's buffered AuditEvents (interactions/audit.py), made straight from
their `AuditRecord`s: the JSON text assembled from parts kept per requestor and per kind of
event (most of an event is the same from one request of a user to the next), and the index
records the generic indexer would extract for the AuditEvent search parameters
(https://hl7.org/fhir/R4/auditevent.html#search) — without building the event as a dict,
evaluating FHIRPath, or going through `NewVersion`, `ResourceIndex` and `index_records`.

It is used only while the registry's AuditEvent parameters are the ones it was written for
(`audit_index.registry_known`); otherwise the trail builds `NewVersion`s through
`audit_version`. tests/auth/test_audit_rows.py compares its rows, content and compartment
with the generic indexer's for every kind of event the buffer holds."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from cmfhir.auth.principal import Principal
from cmfhir.interactions.audit_shape import (
    AuditRecord,
    action,
    agents,
    entities,
    event_type,
    outcome,
    subtypes,
)
from cmfhir.interactions.context import instant
from cmfhir.resources.fhirjson import dump_json
from cmfhir.resources.fhirpath import parse_reference
from cmfhir.resources.index_values import date_range, normalize_string
from cmfhir.store.audit_events import TERM_PARAMS, EventRow
from cmfhir.store.indexing import MAX_INDEXED_BYTES

__all__ = ["AuditRows"]

_TYPE = "AuditEvent"
_ACTION = "http://hl7.org/fhir/audit-event-action"
_OUTCOME = "http://hl7.org/fhir/audit-event-outcome"
_ENTITY_TYPE = ("entity-type", "http://terminology.hl7.org/CodeSystem/audit-entity-type", "1")
_SOURCE = '"source":{"observer":{"display":"cmfhir"}'
_HEAD = '{"resourceType":"AuditEvent","id":"'
_META = '","meta":{"versionId":"1","lastUpdated":"'
# A part stays cached while fewer than this many distinct ones were seen.
_CACHED = 4096

Record = tuple[Any, ...]
# (param, target_type, target_id, url, version): what the generic indexer deduplicates on.
_Reference = tuple[str, str | None, str | None, str, str | None]


def _fit(text: str | None) -> str | None:
    """As store/indexing.py cuts a text value to what a btree entry holds."""
    if text is None or len(text) <= MAX_INDEXED_BYTES // 4:
        return text
    encoded = text.encode()
    if len(encoded) <= MAX_INDEXED_BYTES:
        return text
    return encoded[:MAX_INDEXED_BYTES].decode(errors="ignore")


def _json(value: Any) -> str:
    return dump_json(value).decode()


def _token(param: str, system: str | None, code: str | None) -> Record:
    return (param, _fit(system), _fit(code))


@lru_cache(maxsize=8192)
def _reference(param: str, text: str) -> tuple[_Reference, ...]:
    """As the generic indexer reads a `Reference.reference` of `param`; a Patient's also
    under `patient` (AuditEvent's `patient` is the agents' and entities' Patients)."""
    if text.startswith("#"):
        return ()
    target_type, target_id, url, version = parse_reference(text)
    found: tuple[_Reference, ...] = ((param, target_type, target_id, url, version),)
    if target_type == "Patient":
        found += (("patient", target_type, target_id, url, version),)
    return found


@lru_cache(maxsize=8192)
def _reference_row(ref: _Reference) -> Record:
    param, target_type, target_id, url, _ = ref
    return (param, _fit(target_type), _fit(target_id), _fit(url))


def _term(ref: _Reference) -> str | None:
    param, _, target_id, url, _ = ref
    if target_id is not None:
        return f"{param}|{_fit(target_id)}"
    return None if url is None else f"{param}|{_fit(url)}"


def _references(param: str, texts: Iterable[str], out: list[_Reference]) -> None:
    for text in texts:
        out.extend(_reference(param, text))


def _ids(n: int, now: datetime) -> list[str]:
    """`n` time-ordered (version 7, RFC 9562) UUIDs: the milliseconds of `now`, then 74
    random bits, from one read of the system's random source. An event's id is the key of
    a unique index on a table that only grows: random (version 4) ids put each insertion
    on a random page of an index larger than memory, each page dirtied again after every
    checkpoint (a full page in the WAL); ids that start with the time go to the few pages
    where the index ends."""
    millis = f"{int(now.timestamp() * 1000) & 0xFFFFFFFFFFFF:012x}"
    head = f"{millis[:8]}-{millis[8:]}-7"
    data = os.urandom(16 * n).hex()
    out = []
    for start in range(0, 32 * n, 32):
        h = data[start : start + 32]
        variant = "89ab"[int(h[16], 16) & 3]
        out.append(f"{head}{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return out


class _Agent(NamedTuple):
    """The agents of one requestor: JSON, token and string records, the references (the
    `agent` ones first, then their Patients under `patient`)."""

    json: str
    token: list[Record]
    string: list[Record]
    references: list[_Reference]


class _Kind(NamedTuple):
    """Type, subtypes, action and outcome of one kind of event: JSON and token records."""

    json: str
    token: list[Record]


@dataclass(slots=True)
class AuditRows:
    """Builds the `EventRow`s of buffered records, keeping the parts that repeat."""

    _agents: dict[tuple[Principal, str | None, str | None], _Agent] = field(default_factory=dict)
    _kinds: dict[tuple[str, str | None, tuple[tuple[str, str], ...], str], _Kind] = field(
        default_factory=dict
    )

    def rows(self, records: Sequence[AuditRecord], now: datetime) -> list[EventRow]:
        """One row per record: its event about its member (about nobody for a record
        without members), or its events about each of its members (`EventRow.members`);
        recorded and stamped (`meta.lastUpdated`) at `now`."""
        recorded = instant(now)
        low, high = date_range(recorded)
        date = [("date", low, high)]
        middle = f',"recorded":"{recorded}",'
        out: list[EventRow] = []
        ids = _ids(len(records), now)
        for record in records:
            agent = self._agent(record.principal, record.alt_id, record.address)
            kind = self._kind(record)
            source = _SOURCE
            site = record.request_id
            token = kind.token + agent.token
            if site:
                source = f'{_SOURCE},"site":{_json(site)}'
                token = [*token, ("site", None, _fit(site))]
            fixed = f'{recorded}"}},{kind.json}{middle}{agent.json},{source}}}'
            if len(record.members) > 1:
                out.append(self._members_row(record, agent, token, date, fixed, ids.pop(), site))
                continue
            member = record.members[0] if record.members else None
            out.append(self._row(record, member, agent, token, date, fixed, ids.pop(), site))
        return out

    def _members_row(
        self,
        record: AuditRecord,
        agent: _Agent,
        token: list[Record],
        date: list[Record],
        fixed: str,
        id: str,
        site: str | None,
    ) -> EventRow:
        """The events of `record` about each of its members, as one row: what they share
        (the event without its member's entity, the index records without the member's
        two references) and the terms of them all (store/audit_events.py)."""
        row = self._row(record, None, agent, [*token, _ENTITY_TYPE], date, fixed, id, site)
        # The compartment of an event about a member is the agent's Patient, if it is one,
        # before the member (as `_row` orders references).
        row.patient_id = next(
            (
                r[2]
                for r in agent.references
                if r[0] == "patient" and r[2] is not None and "://" not in r[3]
            ),
            None,
        )
        terms = dict.fromkeys(row.terms)
        for member in record.members:
            for ref in _reference("entity", f"Patient/{member}"):
                terms[_term(ref) or ""] = None
        terms.pop("", None)
        row.terms = list(terms)
        row.members = list(record.members)
        return row

    def _row(
        self,
        record: AuditRecord,
        member: str | None,
        agent: _Agent,
        token: list[Record],
        date: list[Record],
        fixed: str,
        id: str,
        site: str | None,
    ) -> EventRow:
        what = entities(member, record.resources, record.query)
        references = list(agent.references)
        tail = fixed + "}"
        if what:
            tail = f'{fixed},"entity":{_json(what)}}}'
            texts = [e["what"]["reference"] for e in what if "what" in e]
            _references("entity", texts, references)
            if member:
                token = [*token, _ENTITY_TYPE]
        # The agents' Patients before the entities': the compartment takes the first.
        unique = dict.fromkeys(
            [r for r in references if r[0] != "patient"]
            + [r for r in references if r[0] == "patient"]
        )
        patient_id = next(
            (r[2] for r in unique if r[0] == "patient" and r[2] is not None and "://" not in r[3]),
            None,
        )
        index: dict[str, list[Record]] = {
            "token": token,
            "date": date,
            "reference": [_reference_row(r) for r in unique],
        }
        if agent.string:
            index["string"] = agent.string
        # As store/audit_events.py `terms_of` reads them from the records.
        terms = dict.fromkeys(_term(r) for r in unique if r[0] in TERM_PARAMS)
        if site:
            terms[f"site|{_fit(site)}"] = None
        return EventRow(
            id,
            f"{_HEAD}{id}{_META}{tail}",
            patient_id,
            index,
            stamped=date[0][1],
            terms=[t for t in terms if t is not None],
            recorded=date[0][1],
        )

    def _agent(self, principal: Principal, alt_id: str | None, address: str | None) -> _Agent:
        key = (principal, alt_id, address)
        found = self._agents.get(key)
        if found is None:
            found = _agent(principal, alt_id, address)
            if len(self._agents) >= _CACHED:
                self._agents.clear()
            self._agents[key] = found
        return found

    def _kind(self, record: AuditRecord) -> _Kind:
        key = (record.interaction, record.within, record.subtypes, outcome(record.status))
        found = self._kinds.get(key)
        if found is None:
            found = _kind(*key)
            if len(self._kinds) >= _CACHED:
                self._kinds.clear()
            self._kinds[key] = found
        return found


def _agent(principal: Principal, alt_id: str | None, address: str | None) -> _Agent:
    shaped = agents(principal, alt_id, address)
    token: list[Record] = []
    string: list[Record] = []
    identifiers: list[Record] = []
    texts: list[str] = []
    for agent in shaped:
        who = agent["who"]
        if "reference" in who:
            texts.append(who["reference"])
        identifier = who.get("identifier")
        if identifier is not None:
            identifiers.append(
                _token("agent:identifier", identifier.get("system"), identifier["value"])
            )
        if "altId" in agent:
            token.append(_token("altid", None, agent["altId"]))
        network = agent.get("network")
        if network is not None:
            text = network["address"]
            string.append(("address", _fit(normalize_string(text)), _fit(text)))
    references: list[_Reference] = []
    _references("agent", texts, references)
    token += dict.fromkeys(identifiers)
    return _Agent(f'"agent":{_json(shaped)}', token, string, references)


def _kind(
    interaction: str, within: str | None, more: tuple[tuple[str, str], ...], out: str
) -> _Kind:
    kind = event_type(interaction)
    found = subtypes(interaction, within, more)
    token = [_token("type", kind["system"], kind["code"])]
    token += dict.fromkeys(_token("subtype", c["system"], c["code"]) for c in found)
    code = action(interaction)
    token += [_token("action", _ACTION, code), _token("outcome", _OUTCOME, out)]
    parts = [f'"type":{_json(kind)}', f'"action":"{code}"', f'"outcome":"{out}"']
    if found:
        parts.append(f'"subtype":{_json(found)}')
    return _Kind(",".join(parts), token)
