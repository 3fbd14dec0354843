"""The shape of the trail's AuditEvents (https://hl7.org/fhir/R4/auditevent.html): what one
request did (`AuditRecord`) and the AuditEvent it gives for one member (`audit_event`),
built from parts (the agents, the type and subtypes, the entities) that
interactions/audit_rows.py also writes straight as JSON and index rows."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from cmfhir.auth.principal import Principal
from cmfhir.interactions.context import instant, utcnow

__all__ = [
    "ENTITIES_PER_EVENT",
    "SUBTYPES",
    "AuditRecord",
    "action",
    "agents",
    "audit_event",
    "entities",
    "event_type",
    "outcome",
    "subtypes",
]

_ACTIONS = {
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "history-type": "R",
    "history-system": "R",
    "search-type": "E",
    "search-system": "E",
    "search-compartment": "E",
    "create": "C",
    "update": "U",
    "update-conditional": "U",
    "patch": "U",
    "delete": "D",
    "delete-conditional": "D",
    "transaction": "E",
    "batch": "E",
    "operation": "E",
}
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_EVENT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"}
# DICOM's "User Authentication" event and its "Login" subtype, for the authorization
# server's logins and token grants (https://hl7.org/fhir/R4/valueset-audit-event-type.html).
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_LOGIN_TYPE = {"system": _DCM, "code": "110114"}
_LOGIN = (_DCM, "110122")
# IHE IUA's transactions, as IHE BALP's ITI-71 AuditEvent names them (urn:ihe:event-type-code).
_IHE = "urn:ihe:event-type-code"
# The SMART steps no standard code names (profiles/content/CodeSystem-audit-event-subtype.json).
SUBTYPES = "https://cmfhir.org/fhir/CodeSystem/audit-event-subtype"
# The authorization server's events, all of DICOM's User Authentication type, and their
# subtypes: the authorize request that starts a launch, the login form, the token request,
# introspection, revocation and the EHR's launch context (docs/security.md, Audit).
_AUTH_SUBTYPES: dict[str, tuple[tuple[str, str], ...]] = {
    "authorize": (),
    "login": (_LOGIN,),
    "token": (_LOGIN, (_IHE, "ITI-71")),
    "introspect": ((_IHE, "ITI-102"),),
    "revoke": ((SUBTYPES, "token-revocation"),),
    "launch": ((SUBTYPES, "launch-context"),),
}
ENTITIES_PER_EVENT = 50
_MEMBER_ENTITY_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
    "code": "1",
}


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What one request did: the interaction, its outcome (HTTP status), the members whose
    data it touched, the resources (Type/id) and the query, who asked and from where."""

    interaction: str
    status: int
    principal: Principal
    members: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    query: str | None = None
    address: str | None = None
    request_id: str | None = None
    # The request's interaction when this event is one write among several it made
    # (transaction, batch, operation): a second `subtype`.
    within: str | None = None
    # The account name a login gave (`agent.altId`), whether or not it was accepted.
    alt_id: str | None = None
    # Codings (system, code) added to the interaction's own subtypes (the kind of launch).
    subtypes: tuple[tuple[str, str], ...] = ()


def outcome(status: int) -> str:
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


def action(interaction: str) -> str:
    return _ACTIONS.get(interaction, "E")


def agents(principal: Principal, alt_id: str | None, address: str | None) -> list[dict[str, Any]]:
    """The requestor (the token's user, the account name given, the address) and the OAuth
    client, as IHE BALP names them."""
    who: dict[str, Any]
    if principal.fhir_user:
        who = {"reference": principal.fhir_user}
    else:
        who = {"display": "anonymous" if principal.kind == "open" else principal.kind}
    agent: dict[str, Any] = {"who": who, "requestor": True}
    if alt_id:
        agent["altId"] = alt_id
    if address:
        agent["network"] = {"address": address, "type": "2"}
    out = [agent]
    if principal.client_id:
        out.append(
            {
                "who": {
                    "identifier": {"system": "urn:cmfhir:client", "value": principal.client_id}
                },
                "requestor": False,
            }
        )
    return out


def event_type(interaction: str) -> dict[str, str]:
    return dict(_LOGIN_TYPE if interaction in _AUTH_SUBTYPES else _EVENT_TYPE)


def subtypes(
    interaction: str, within: str | None, more: tuple[tuple[str, str], ...]
) -> list[dict[str, str]]:
    auth = _AUTH_SUBTYPES.get(interaction)
    if auth is not None:
        return [{"system": system, "code": code} for system, code in auth + more]
    return [
        {"system": _INTERACTION, "code": code} for code in (interaction, within) if code is not None
    ]


def entities(
    member: str | None, resources: tuple[str, ...], query: str | None
) -> list[dict[str, Any]]:
    """The member (a person entity), the resources read or written and the query (base64)."""
    out: list[dict[str, Any]] = []
    if member:
        out.append({"what": {"reference": f"Patient/{member}"}, "type": _MEMBER_ENTITY_TYPE})
    out.extend({"what": {"reference": reference}} for reference in resources[:ENTITIES_PER_EVENT])
    if query:
        out.append({"query": base64.b64encode(query.encode()).decode()})
    return out


def audit_event(record: AuditRecord, member: str | None) -> dict[str, Any]:
    """The AuditEvent of `record` about `member` (None: about nobody in particular)."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": event_type(record.interaction),
        "action": action(record.interaction),
        "recorded": instant(utcnow()),
        "outcome": outcome(record.status),
        "agent": agents(record.principal, record.alt_id, record.address),
        "source": {"observer": {"display": "cmfhir"}},
    }
    found = subtypes(record.interaction, record.within, record.subtypes)
    if found:
        event["subtype"] = found
    what = entities(member, record.resources, record.query)
    if what:
        event["entity"] = what
    if record.request_id:
        event["source"]["site"] = record.request_id
    return event
