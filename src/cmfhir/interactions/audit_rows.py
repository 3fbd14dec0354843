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

__all__ = ["GROUPED", "AuditRows"]

_TYPE = "AuditEvent"
_ACTION = "http://hl7.org/fhir/audit-event-action"
_OUTCOME = "http://hl7.org/fhir/audit-event-outcome"
_ENTITY_TYPE = ("entity-type", "http://terminology.hl7.org/CodeSystem/audit-entity-type", "1")
_SOURCE = '"source":{"observer":{"display":"cmfhir"}'
_HEAD = '{"resourceType":"AuditEvent","id":"'
_META = '","meta":{"versionId":"1","lastUpdated":"'
# A part stays cached while fewer than this many distinct ones were seen.
_CACHED = 4096
# The events of one requestor and kind stored in one row at most (store/audit_events.py):
# a read of one of them expands the row, so the row stays small.
GROUPED = 50

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


class _Own(NamedTuple):
    """What one event has of its own beside its requestor's and kind's parts: its entities
    (JSON), request id, compartment, token and reference records and terms."""

    entity: list[dict[str, Any]]
    site: str | None
    patient_id: str | None
    token: list[Record]
    references: list[_Reference]
    terms: list[str]


@dataclass(slots=True)
class AuditRows:
    """Builds the `EventRow`s of buffered records, keeping the parts that repeat."""

    _agents: dict[tuple[Principal, str | None, str | None], _Agent] = field(default_factory=dict)
    _kinds: dict[tuple[str, str | None, tuple[tuple[str, str], ...], str], _Kind] = field(
        default_factory=dict
    )

    def rows(self, records: Sequence[AuditRecord], now: datetime) -> list[EventRow]:
        """The events of `records` (one per member concerned; one about nobody for a
        record without members), recorded and stamped (`meta.lastUpdated`) at `now`: the
        events of one requestor and kind of event in rows of up to `GROUPED`
        (`EventRow.events`, store/audit_events.py); an event alone in a row of its own."""
        recorded = instant(now)
        low, high = date_range(recorded)
        date = [("date", low, high)]
        middle = f',"recorded":"{recorded}",'
        groups: dict[tuple[Any, ...], tuple[_Agent, _Kind, list[_Own]]] = {}
        for record in records:
            key = (record.principal, record.alt_id, record.address, *_kind_key(record))
            group = groups.get(key)
            if group is None:
                agent = self._agent(record.principal, record.alt_id, record.address)
                group = groups[key] = (agent, self._kind(record), [])
            agent, _, found = group
            found.extend(_own(record, member, agent) for member in record.members or (None,))
        chunks = [
            (agent, kind, found[start : start + GROUPED])
            for agent, kind, found in groups.values()
            for start in range(0, len(found), GROUPED)
        ]
        ids = _ids(len(chunks), now)
        out: list[EventRow] = []
        for (agent, kind, chunk), id in zip(chunks, ids, strict=True):
            head = f'{_HEAD}{id}{_META}{recorded}"}},{kind.json}{middle}{agent.json},{_SOURCE}'
            index: dict[str, list[Record]] = {
                "token": kind.token + agent.token,
                "date": date,
                "reference": [_reference_row(r) for r in dict.fromkeys(agent.references)],
            }
            if agent.string:
                index["string"] = agent.string
            stamp = date[0][1]
            terms = dict.fromkeys(_term(r) for r in agent.references if r[0] in TERM_PARAMS)
            if len(chunk) == 1:
                out.append(_single(id, head, index, terms, chunk[0], stamp))
                continue
            events = []
            for own in chunk:
                terms.update(dict.fromkeys(own.terms))
                event: dict[str, Any] = {
                    "idx": {
                        "token": own.token,
                        "reference": [_reference_row(r) for r in own.references],
                    }
                }
                if own.entity:
                    event["entity"] = own.entity
                if own.site:
                    event["site"] = own.site
                if own.patient_id:
                    event["patient"] = own.patient_id
                events.append(event)
            out.append(
                EventRow(
                    id,
                    head + "}}",
                    None,
                    index,
                    stamped=stamp,
                    terms=[t for t in terms if t is not None],
                    recorded=stamp,
                    events=events,
                )
            )
        return out

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
        key = _kind_key(record)
        found = self._kinds.get(key)
        if found is None:
            found = _kind(*key)
            if len(self._kinds) >= _CACHED:
                self._kinds.clear()
            self._kinds[key] = found
        return found


def _kind_key(record: AuditRecord) -> tuple[str, str | None, tuple[tuple[str, str], ...], str]:
    return (record.interaction, record.within, record.subtypes, outcome(record.status))


def _own(record: AuditRecord, member: str | None, agent: _Agent) -> _Own:
    """What the event of `record` about `member` has of its own: its entities (the member
    first), request id and their records and terms, its references that its agents do not
    have already (as the generic indexer keeps each reference once) and its compartment:
    the agents' Patient, else its entities' first."""
    entity = entities(member, record.resources, record.query)
    site = record.request_id
    token: list[Record] = [_ENTITY_TYPE] if member else []
    found: list[_Reference] = []
    _references("entity", [e["what"]["reference"] for e in entity if "what" in e], found)
    have = set(agent.references)
    references = [r for r in dict.fromkeys(found) if r not in have]
    terms = [t for t in (_term(r) for r in references if r[0] in TERM_PARAMS) if t is not None]
    if site:
        token.append(("site", None, _fit(site)))
        terms.append(f"site|{_fit(site)}")
    patient_id = _compartment(agent.references) or _compartment(references)
    return _Own(entity, site, patient_id, token, references, terms)


def _compartment(references: Iterable[_Reference]) -> str | None:
    """The first Patient (by id, not by absolute url) among `patient` references."""
    return next(
        (r[2] for r in references if r[0] == "patient" and r[2] is not None and "://" not in r[3]),
        None,
    )


def _single(
    id: str,
    head: str,
    index: dict[str, list[Record]],
    terms: dict[str | None, None],
    own: _Own,
    stamp: datetime,
) -> EventRow:
    """One event in a row of its own: its content whole, the records and terms of its
    requestor's and kind's parts (`index`, `terms`) with its own."""
    tail = "}"
    if own.site:
        tail = f',"site":{_json(own.site)}}}'
    if own.entity:
        tail += f',"entity":{_json(own.entity)}'
    index = dict(index)
    index["token"] = index["token"] + own.token
    index["reference"] = index["reference"] + [_reference_row(r) for r in own.references]
    terms.update(dict.fromkeys(own.terms))
    return EventRow(
        id,
        f"{head}{tail}}}",
        own.patient_id,
        index,
        stamped=stamp,
        terms=[t for t in terms if t is not None],
        recorded=stamp,
    )


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
