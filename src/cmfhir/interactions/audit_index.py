"""The index entries of the AuditEvents the trail writes (interactions/audit.py), read
straight from the shape `audit_event` gives them instead of evaluating each search
parameter's FHIRPath (https://hl7.org/fhir/R4/auditevent.html#search): the same entries
`extract_index` finds, for a fifth of its cost, on every audited request.

Two guards keep it equal to the generic indexer: the AuditEvent search parameters of the
registry must be the ones this module was written for (a SearchParameter added or changed
on AuditEvent sends every event to the generic indexer), and an event with any element
this module does not read goes to the generic indexer too.
tests/auth/test_audit_index.py compares both for every kind of event the trail writes."""

from __future__ import annotations

import weakref
from datetime import datetime
from functools import lru_cache
from typing import Any

from cmfhir.interactions.context import instant
from cmfhir.resources.compartment import PatientCompartment, patient_compartment
from cmfhir.resources.fhirjson import dump_json
from cmfhir.resources.fhirpath import parse_reference
from cmfhir.resources.index_values import (
    NOT_EXTRACTED,
    DateEntry,
    ReferenceEntry,
    ReferenceIdentifierEntry,
    ResourceIndex,
    StringEntry,
    TokenEntry,
    composite_parameters,
    date_range,
    extract_index,
    normalize_string,
)
from cmfhir.resources.search_parameters import SearchParameterRegistry
from cmfhir.store import NewVersion

__all__ = ["audit_index", "audit_version", "registry_known"]

# (code, type, expression for AuditEvent, code system of a bare code) of every AuditEvent
# parameter the generic indexer extracts, as in R4B's definitions (profiles/).
_PARAMETERS = frozenset(
    {
        ("_profile", "uri", "AuditEvent.meta.profile", None),
        ("_security", "token", "AuditEvent.meta.security", None),
        ("_source", "uri", "AuditEvent.meta.source", None),
        ("_tag", "token", "AuditEvent.meta.tag", None),
        ("action", "token", "AuditEvent.action", "http://hl7.org/fhir/audit-event-action"),
        ("address", "string", "AuditEvent.agent.network.address", None),
        ("agent", "reference", "AuditEvent.agent.who", None),
        ("agent-name", "string", "AuditEvent.agent.name", None),
        ("agent-role", "token", "AuditEvent.agent.role", None),
        ("altid", "token", "AuditEvent.agent.altId", None),
        ("date", "date", "AuditEvent.recorded", None),
        ("entity", "reference", "AuditEvent.entity.what", None),
        ("entity-name", "string", "AuditEvent.entity.name", None),
        ("entity-role", "token", "AuditEvent.entity.role", None),
        ("entity-type", "token", "AuditEvent.entity.type", None),
        ("outcome", "token", "AuditEvent.outcome", "http://hl7.org/fhir/audit-event-outcome"),
        (
            "patient",
            "reference",
            "AuditEvent.agent.who.where(resolve() is Patient) | "
            "AuditEvent.entity.what.where(resolve() is Patient)",
            None,
        ),
        ("policy", "uri", "AuditEvent.agent.policy", None),
        ("site", "token", "AuditEvent.source.site", None),
        ("source", "reference", "AuditEvent.source.observer", None),
        ("subtype", "token", "AuditEvent.subtype", None),
        ("type", "token", "AuditEvent.type", None),
    }
)
_ACTION = "http://hl7.org/fhir/audit-event-action"
_OUTCOME = "http://hl7.org/fhir/audit-event-outcome"

# The elements read below, at each level; an event with any other goes to extract_index.
_EVENT_KEYS = frozenset(
    {
        "resourceType",
        "id",
        "meta",
        "type",
        "subtype",
        "action",
        "recorded",
        "outcome",
        "agent",
        "source",
        "entity",
    }
)
_META_KEYS = frozenset({"versionId", "lastUpdated"})
_CODING_KEYS = frozenset({"system", "code"})
_AGENT_KEYS = frozenset({"who", "requestor", "network", "altId"})
_REFERENCE_KEYS = frozenset({"reference", "identifier", "display"})
_NETWORK_KEYS = frozenset({"address", "type"})
_SOURCE_KEYS = frozenset({"observer", "site"})
_ENTITY_KEYS = frozenset({"what", "type", "query"})

# The same few references (the agent, the members) and instants recur across a flush.
_parse_reference = lru_cache(maxsize=4096)(parse_reference)
_date_range = lru_cache(maxsize=256)(date_range)

_known: weakref.WeakKeyDictionary[SearchParameterRegistry, bool] = weakref.WeakKeyDictionary()


def registry_known(registry: SearchParameterRegistry) -> bool:
    """Whether the AuditEvent search parameters of `registry` are the ones this module and
    interactions/audit_rows.py were written for."""
    known = _known.get(registry)
    if known is None:
        found = set()
        for compiled in registry.extractors("AuditEvent"):
            parameter = compiled.parameter
            if parameter.code in NOT_EXTRACTED:
                continue
            system = None
            if parameter.type == "token":
                system = registry.code_systems.get(compiled.expression)
            found.add((parameter.code, parameter.type, compiled.expression, system))
        known = found == _PARAMETERS and not composite_parameters(registry, "AuditEvent")
        _known[registry] = known
    return known


class _OtherShape(Exception):
    """The event holds an element this module does not index."""


def _only(element: Any, keys: frozenset[str]) -> dict[str, Any]:
    if type(element) is not dict or not keys.issuperset(element):
        raise _OtherShape
    return element


def _coding(param: str, element: Any, out: ResourceIndex) -> None:
    coding = _only(element, _CODING_KEYS)
    system, code = coding.get("system"), coding.get("code")
    if system is not None or code is not None:
        out.token.append(TokenEntry(param, system, code, None))


def _code(param: str, value: Any, system: str | None, out: ResourceIndex) -> None:
    if value is None:
        return
    if type(value) is not str:
        raise _OtherShape
    out.token.append(TokenEntry(param, system, value))


def _references(
    param: str, elements: list[dict[str, Any]], out: ResourceIndex, patients: list[ReferenceEntry]
) -> None:
    """As `add_references` for Reference elements without `type`; the ones that resolve to
    a Patient also go to `patients` (for `patient`)."""
    for element in elements:
        text = element.get("reference")
        if text is not None:
            if type(text) is not str:
                raise _OtherShape
            if not text.startswith("#"):
                target_type, target_id, url, version = _parse_reference(text)
                out.reference.append(ReferenceEntry(param, target_type, target_id, url, version))
                if target_type == "Patient":
                    patients.append(ReferenceEntry("patient", target_type, target_id, url, version))
        identifier = element.get("identifier")
        if identifier is not None:
            if type(identifier) is not dict:
                raise _OtherShape
            if identifier.get("value") is not None:
                out.reference_identifiers.append(
                    ReferenceIdentifierEntry(param, identifier.get("system"), identifier["value"])
                )


def _fast(event: dict[str, Any]) -> ResourceIndex:
    _only(event, _EVENT_KEYS)
    _only(event.get("meta", {}), _META_KEYS)
    out = ResourceIndex()
    if "type" in event:
        _coding("type", event["type"], out)
    for coding in event.get("subtype", ()):
        _coding("subtype", coding, out)
    _code("action", event.get("action"), _ACTION, out)
    _code("outcome", event.get("outcome"), _OUTCOME, out)
    recorded = event.get("recorded")
    if recorded is not None:
        low, high = _date_range(recorded)
        out.date.append(DateEntry("date", low, high))
    whos: list[dict[str, Any]] = []
    for element in event.get("agent", ()):
        agent = _only(element, _AGENT_KEYS)
        if "who" in agent:
            whos.append(_only(agent["who"], _REFERENCE_KEYS))
        if "altId" in agent:
            _code("altid", agent["altId"], None, out)
        if "network" in agent:
            address = _only(agent["network"], _NETWORK_KEYS).get("address")
            if type(address) is str:
                out.string.append(StringEntry("address", normalize_string(address), address))
    whats: list[dict[str, Any]] = []
    for element in event.get("entity", ()):
        entity = _only(element, _ENTITY_KEYS)
        if "what" in entity:
            whats.append(_only(entity["what"], _REFERENCE_KEYS))
        if "type" in entity:
            _coding("entity-type", entity["type"], out)
    patients: list[ReferenceEntry] = []
    _references("agent", whos, out, patients)
    _references("entity", whats, out, patients)
    out.reference.extend(patients)
    if "source" in event:
        source = _only(event["source"], _SOURCE_KEYS)
        if "observer" in source:
            _references("source", [_only(source["observer"], _REFERENCE_KEYS)], out, [])
        site = source.get("site")
        if site is not None:
            if type(site) is not str:
                raise _OtherShape
            out.token.append(TokenEntry("site", None, site))
    families: tuple[list[Any], ...] = (
        out.token,
        out.string,
        out.reference,
        out.reference_identifiers,
    )
    for entries in families:
        if len(entries) > 1:
            entries[:] = dict.fromkeys(entries)
    return out


def audit_index(event: dict[str, Any], registry: SearchParameterRegistry) -> ResourceIndex:
    """The index entries of an AuditEvent made by `audit_event`, equal to
    `extract_index(event, registry)`."""
    if registry_known(registry):
        try:
            return _fast(event)
        except _OtherShape:
            pass
    return extract_index(event, registry)


def audit_version(
    registry: SearchParameterRegistry,
    compartment: PatientCompartment,
    event: dict[str, Any],
    *,
    id: str,
    now: datetime,
) -> NewVersion:
    """The first version of an AuditEvent, as interactions.versions.to_version makes it
    (AuditEvent has no write hook), indexed by `audit_index`."""
    meta = {"versionId": "1", "lastUpdated": instant(now)}
    served: dict[str, Any] = {"resourceType": "AuditEvent", "id": id, "meta": meta}
    for key, value in event.items():
        if key not in served:
            served[key] = value
    index = audit_index(served, registry)
    patients = patient_compartment(served, compartment, index)
    return NewVersion(
        resource_type="AuditEvent",
        id=id,
        version=1,
        last_updated=now,
        method="create",
        content=dump_json(served).decode(),
        index=index,
        patient_id=patients[0] if patients else None,
        rid=None,
    )
