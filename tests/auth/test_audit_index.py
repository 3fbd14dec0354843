"""The AuditEvents' own indexer (interactions/audit_index.py) against the generic one: for
every kind of event the trail writes, the same version (content, compartment) and the same
index rows; and the generic indexer whenever the search parameters or the event's shape
are not the ones it was written for."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cmfhir.auth.principal import OPEN, TRUSTED, Principal
from cmfhir.interactions.audit import SUBTYPES, AuditRecord, audit_event
from cmfhir.interactions.audit_index import audit_index, audit_version
from cmfhir.interactions.versions import stamp
from cmfhir.resources.compartment import load_patient_compartment, patient_compartment
from cmfhir.resources.fhirjson import dump_json
from cmfhir.resources.index_values import ResourceIndex, extract_index
from cmfhir.resources.search_parameters import (
    SearchParameter,
    SearchParameterRegistry,
    load_registry,
)
from cmfhir.store.indexing import index_rows

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
NOW = datetime(2026, 11, 30, 12, 0, 0, 123000, tzinfo=UTC)

NURSE = Principal("user", client_id="console", fhir_user="Practitioner/n1", scopes=("user/*.rs",))
MEMBER = Principal("patient", client_id="member-app", fhir_user="Patient/m1", patient="m1")
BACKEND = Principal("system", client_id="hie-feed", scopes=("system/*.rs",))
ABSOLUTE = Principal("user", client_id="sso", fhir_user="https://idp.example/fhir/Practitioner/7")
ANONYMOUS_REFUSED = Principal("system", client_id=None, scopes=())

# (id, record, member): what routes/audit.py buffers and what interactions/audit.py writes
# with a write's transaction, one of each kind.
KINDS: list[tuple[str, AuditRecord, str | None]] = [
    (
        "read",
        AuditRecord("read", 200, NURSE, ("m1",), ("Observation/o1",), None, "10.0.0.8", "req-1"),
        "m1",
    ),
    (
        "read-own-record",
        AuditRecord("read", 200, MEMBER, ("m1",), ("Patient/m1",), None, "::1", "req-2"),
        "m1",
    ),
    (
        "search",
        AuditRecord(
            "search-type",
            200,
            NURSE,
            ("m1", "m2"),
            (),
            "Observation?subject=Patient/m1&_include=Observation:performer",
            "10.0.0.8",
            "req-3",
        ),
        "m2",
    ),
    ("history", AuditRecord("history-instance", 200, OPEN, ("m1",), ("Patient/m1",)), "m1"),
    (
        "create",
        AuditRecord(
            "create", 200, BACKEND, (), ("Observation/o2/_history/1",), None, "10.0.0.9", "req-4"
        ),
        "m1",
    ),
    (
        "update",
        AuditRecord("update", 200, NURSE, (), ("Observation/o2/_history/2",), None, None, "r5"),
        "m1",
    ),
    (
        "delete",
        AuditRecord("delete", 200, ABSOLUTE, (), ("Observation/o2/_history/3",), None, "h", "r"),
        "m1",
    ),
    (
        "transaction-entries",
        AuditRecord(
            "create",
            200,
            BACKEND,
            (),
            tuple(f"Observation/t{n}/_history/1" for n in range(60)),
            None,
            "10.0.0.9",
            "req-6",
            within="transaction",
        ),
        "m3",
    ),
    (
        "transaction-no-member",
        AuditRecord(
            "create", 200, BACKEND, (), ("Practitioner/p1/_history/1",), within="transaction"
        ),
        None,
    ),
    (
        "transaction-request",
        AuditRecord("transaction", 200, BACKEND, ("m3",), (), None, "10.0.0.9", "req-6"),
        "m3",
    ),
    (
        "export",
        AuditRecord(
            "operation",
            202,
            BACKEND,
            (),
            (),
            "Patient/$export?_type=Patient,Observation",
            "10.0.0.9",
            "req-7",
        ),
        None,
    ),
    (
        "operation-everything",
        AuditRecord("operation", 200, MEMBER, ("m1",), (), "Patient/m1/$everything", "::1"),
        "m1",
    ),
    (
        "operation-write",
        AuditRecord("update", 200, TRUSTED, (), ("Patient/m1/_history/4",), within="operation"),
        "m1",
    ),
    (
        "login",
        AuditRecord("login", 200, NURSE, (), (), None, "10.0.0.8", "req-8"),
        None,
    ),
    (
        "login-failed",
        AuditRecord("login", 401, Principal("user", client_id="console"), (), (), None, "10.0.0.8"),
        None,
    ),
    (
        "authorize-ehr-launch",
        AuditRecord(
            "authorize",
            200,
            Principal("user", client_id="app"),
            ("m1",),
            subtypes=((SUBTYPES, "ehr-launch"),),
        ),
        "m1",
    ),
    (
        "login-standalone-launch",
        AuditRecord(
            "login",
            303,
            MEMBER,
            ("m1",),
            address="::1",
            alt_id="dana",
            subtypes=((SUBTYPES, "standalone-launch"),),
        ),
        "m1",
    ),
    ("token", AuditRecord("token", 200, MEMBER, ("m1",), address="::1"), "m1"),
    (
        "introspect",
        AuditRecord("introspect", 200, BACKEND, (), ("Practitioner/n1",), None, "10.0.0.9"),
        None,
    ),
    ("introspect-refused", AuditRecord("introspect", 401, ANONYMOUS_REFUSED), None),
    ("revoke", AuditRecord("revoke", 200, MEMBER, ("m1",), address="::1"), "m1"),
    ("launch-context", AuditRecord("launch", 200, NURSE, ("m1",), address="10.0.0.8"), "m1"),
    (
        "refused-401",
        AuditRecord("read", 401, ANONYMOUS_REFUSED, (), ("Patient/m1",), None, "10.0.0.66"),
        "m1",
    ),
    (
        "refused-403",
        AuditRecord("search-type", 403, NURSE, ("m1",), (), "Patient?name=x", "10.0.0.8"),
        "m1",
    ),
    (
        "server-error",
        AuditRecord("read", 500, OPEN, (), ("Observation/o9",), None, None, None),
        None,
    ),
]


def _rows(index: ResourceIndex) -> dict[str, list[tuple[Any, ...]]]:
    """The index rows the store writes, in a comparable order."""
    return {
        kind: sorted((tuple(sorted(row.items())) for row in rows), key=repr)
        for kind, rows in index_rows(1, "AuditEvent", index).items()
    }


@pytest.fixture(scope="module")
def registry() -> SearchParameterRegistry:
    return load_registry(PROFILES)


@pytest.mark.parametrize(
    ("record", "member"), [(r, m) for _, r, m in KINDS], ids=[k for k, _, _ in KINDS]
)
def test_same_version_and_rows_as_the_generic_indexer(
    registry: SearchParameterRegistry, record: AuditRecord, member: str | None
) -> None:
    compartment = load_patient_compartment(PROFILES)
    event = audit_event(record, member)
    fast = audit_version(registry, compartment, event, id="e1", now=NOW)

    served = stamp(event, "e1", 1, NOW)
    generic = extract_index(served, registry)
    assert fast.content == dump_json(served).decode()
    patients = patient_compartment(served, compartment, generic)
    assert fast.patient_id == (patients[0] if patients else None)
    assert fast.index is not None
    assert _rows(fast.index) == _rows(generic)
    # Not vacuous: each event has its date, type and outcome rows, and its member's.
    rows = _rows(generic)
    assert rows["date"] and rows["token"]
    if member:
        assert fast.patient_id == member


def test_other_search_parameters_on_audit_event_use_the_generic_indexer(
    registry: SearchParameterRegistry,
) -> None:
    extra = SearchParameter(
        url="https://example.org/SearchParameter/audit-requestor",
        code="requestor",
        base=("AuditEvent",),
        type="token",
        expression="AuditEvent.agent.requestor",
    )
    wider = SearchParameterRegistry([*registry.all(), extra], registry.code_systems)
    served = stamp(audit_event(KINDS[0][1], "m1"), "e1", 1, NOW)
    index = audit_index(served, wider)
    assert _rows(index) == _rows(extract_index(served, wider))
    assert ("requestor", None, "true", None) in index.token


def test_an_element_it_does_not_read_sends_the_event_to_the_generic_indexer(
    registry: SearchParameterRegistry,
) -> None:
    served = stamp(audit_event(KINDS[0][1], "m1"), "e1", 1, NOW)
    served["agent"][0]["role"] = [{"text": "Care Manager"}]
    served["entity"][1]["name"] = "Lab result"
    index = audit_index(served, registry)
    assert _rows(index) == _rows(extract_index(served, registry))
    assert {("agent-role", "care manager"), ("entity-name", "lab result")} <= {
        (e.param, e.text) for e in index.token
    } | {(e.param, e.value) for e in index.string}
