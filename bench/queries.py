"""The care-manager questions of the search scenario, each as a FHIR search and as the SQL
a person would write by hand against the same tables (`src/cmfhir/store/schema.py`).

Every SQL returns `(id, content)` rows of the first page, ordered by `rid` like the
server's default sort, and takes the page size as its last argument."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import asyncpg

from bench import vocab as v
from bench.caseload import Staff

__all__ = ["QUERIES", "Query", "build_samples"]

Args = tuple[Any, ...]


def _same(values: Args) -> Args:
    return values


def _prefix_range(values: Args) -> Args:
    (prefix,) = values
    return (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))


@dataclass(frozen=True)
class Query:
    name: str
    question: str
    fhir: str  # str.format template over the sample's values (URL-quoted)
    sql: str
    sample: str  # key into the samples built by build_samples
    feature: str | None = None  # being added in parallel: a 400 means "unsupported"
    sql_args: Callable[[Args], Args] = _same

    def path(self, values: Args) -> str:
        return self.fhir.format(*(quote(str(x), safe="") for x in values))


QUERIES: tuple[Query, ...] = (
    Query(
        "care_manager_episodes",
        "a care manager's members (enrollments)",
        "EpisodeOfCare?care-manager=Practitioner/{0}",
        """SELECT r.id, r.content::text FROM idx_reference i JOIN resource r ON r.rid = i.rid
           WHERE i.resource_type = 'EpisodeOfCare' AND i.param = 'care-manager'
             AND i.target_type = 'Practitioner' AND i.target_id = $1 AND NOT r.deleted
           ORDER BY r.rid LIMIT $2""",
        "care_manager",
    ),
    Query(
        "member_encounters_since",
        "a member's encounters since 2024-01-01",
        "Encounter?subject=Patient/{0}&date=ge2024-01-01",
        """SELECT r.id, r.content::text FROM idx_reference s JOIN resource r ON r.rid = s.rid
           WHERE s.resource_type = 'Encounter' AND s.param = 'subject'
             AND s.target_type = 'Patient' AND s.target_id = $1 AND NOT r.deleted
             AND EXISTS (SELECT 1 FROM idx_date d WHERE d.rid = r.rid
                         AND d.resource_type = 'Encounter' AND d.param = 'date'
                         AND d.high > '2024-01-01T00:00:00Z')
           ORDER BY r.rid LIMIT $2""",
        "patient",
    ),
    Query(
        "medication_statement_by_code",
        "members on a medication (RxNorm code)",
        "MedicationStatement?code={0}|{1}",
        """SELECT r.id, r.content::text FROM idx_token t JOIN resource r ON r.rid = t.rid
           WHERE t.resource_type = 'MedicationStatement' AND t.param = 'code'
             AND t.system = $1 AND t.code = $2 AND NOT r.deleted
           ORDER BY r.rid LIMIT $3""",
        "medication",
    ),
    Query(
        "patient_name_prefix",
        "members by name prefix",
        "Patient?name={0}",
        """SELECT r.id, r.content::text FROM resource r
           WHERE r.resource_type = 'Patient' AND NOT r.deleted
             AND EXISTS (SELECT 1 FROM idx_string s WHERE s.rid = r.rid
                         AND s.resource_type = 'Patient' AND s.param = 'name'
                         AND s.value ~>=~ $1 AND s.value ~<~ $2)
           ORDER BY r.rid LIMIT $3""",
        "name_prefix",
        sql_args=_prefix_range,
    ),
    Query(
        "member_no_shows",
        "a member's no-show appointments",
        "Appointment?status=noshow&patient=Patient/{0}",
        """SELECT r.id, r.content::text FROM idx_reference p JOIN resource r ON r.rid = p.rid
           WHERE p.resource_type = 'Appointment' AND p.param = 'patient'
             AND p.target_type = 'Patient' AND p.target_id = $1 AND NOT r.deleted
             AND EXISTS (SELECT 1 FROM idx_token t WHERE t.rid = r.rid
                         AND t.resource_type = 'Appointment' AND t.param = 'status'
                         AND t.code = 'noshow')
           ORDER BY r.rid LIMIT $2""",
        "noshow_patient",
    ),
    Query(
        "observation_code_since",
        "lab results of one code since 2025-01-01",
        "Observation?code={0}|{1}&date=ge2025-01-01",
        """SELECT r.id, r.content::text FROM idx_token t JOIN resource r ON r.rid = t.rid
           WHERE t.resource_type = 'Observation' AND t.param = 'code'
             AND t.system = $1 AND t.code = $2 AND NOT r.deleted
             AND EXISTS (SELECT 1 FROM idx_date d WHERE d.rid = r.rid
                         AND d.resource_type = 'Observation' AND d.param = 'date'
                         AND d.high > '2025-01-01T00:00:00Z')
           ORDER BY r.rid LIMIT $3""",
        "lab",
    ),
    Query(
        "dispenses_by_member_id",
        "a member's dispenses, by member id (chain)",
        "MedicationDispense?patient.identifier={0}|{1}",
        """SELECT r.id, r.content::text
           FROM idx_token t
           JOIN resource p ON p.rid = t.rid AND NOT p.deleted
           JOIN idx_reference m ON m.resource_type = 'MedicationDispense'
                AND m.param = 'patient' AND m.target_type = 'Patient' AND m.target_id = p.id
           JOIN resource r ON r.rid = m.rid AND NOT r.deleted
           WHERE t.resource_type = 'Patient' AND t.param = 'identifier'
             AND t.system = $1 AND t.code = $2
           ORDER BY r.rid LIMIT $3""",
        "member_id",
        feature="chain",
    ),
    Query(
        "care_manager_patients",
        "a care manager's members as Patients (_has)",
        "Patient?_has:EpisodeOfCare:patient:care-manager=Practitioner/{0}",
        """SELECT p.id, p.content::text FROM resource p
           WHERE p.resource_type = 'Patient' AND NOT p.deleted AND p.id IN (
               SELECT pr.target_id FROM idx_reference cm
               JOIN resource e ON e.rid = cm.rid AND NOT e.deleted
               JOIN idx_reference pr ON pr.rid = cm.rid AND pr.resource_type = 'EpisodeOfCare'
                    AND pr.param = 'patient' AND pr.target_type = 'Patient'
               WHERE cm.resource_type = 'EpisodeOfCare' AND cm.param = 'care-manager'
                 AND cm.target_type = 'Practitioner' AND cm.target_id = $1)
           ORDER BY p.rid LIMIT $2""",
        "care_manager",
        feature="_has",
    ),
    Query(
        "care_manager_episodes_with_patients",
        "a care manager's enrollments with their Patients (_include)",
        "EpisodeOfCare?care-manager=Practitioner/{0}&_include=EpisodeOfCare:patient",
        """WITH page AS (
               SELECT r.rid, r.id, r.content FROM idx_reference i
               JOIN resource r ON r.rid = i.rid
               WHERE i.resource_type = 'EpisodeOfCare' AND i.param = 'care-manager'
                 AND i.target_type = 'Practitioner' AND i.target_id = $1 AND NOT r.deleted
               ORDER BY r.rid LIMIT $2)
           SELECT id, content::text FROM page
           UNION ALL
           SELECT p.id, p.content::text FROM resource p
           WHERE p.resource_type = 'Patient' AND NOT p.deleted AND p.id IN (
               SELECT i.target_id FROM idx_reference i JOIN page ON i.rid = page.rid
               WHERE i.resource_type = 'EpisodeOfCare' AND i.param = 'patient'
                 AND i.target_type = 'Patient')""",
        "care_manager",
        feature="_include",
    ),
)

_NOSHOW_PATIENTS = """
    SELECT DISTINCT p.target_id FROM idx_reference p
    JOIN idx_token t ON t.rid = p.rid AND t.resource_type = 'Appointment'
         AND t.param = 'status' AND t.code = 'noshow'
    WHERE p.resource_type = 'Appointment' AND p.param = 'patient' AND p.target_type = 'Patient'
    ORDER BY 1 LIMIT 2000"""


async def build_samples(
    database_url: str, staff: Staff, ids: dict[str, list[str]], members: int, seed: int
) -> dict[str, list[Args]]:
    """Argument tuples for each sample kind, drawn deterministically from the loaded data."""
    rng = random.Random(f"search:{seed}")
    patients = ids.get("Patient", [])
    conn = await asyncpg.connect(database_url)
    try:
        noshow = [row[0] for row in await conn.fetch(_NOSHOW_PATIENTS)]
    finally:
        await conn.close()
    samples: dict[str, list[Args]] = {
        "care_manager": [(cm,) for cm in staff.care_managers],
        "patient": [(p,) for p in rng.sample(patients, min(1000, len(patients)))],
        "medication": [(v.RXNORM, code) for code, _ in v.MEDICATIONS],
        "name_prefix": sorted({(family[:3].lower(),) for family in v.FAMILY}),
        "noshow_patient": [(p,) for p in rng.sample(noshow, min(1000, len(noshow)))],
        "lab": [(v.LOINC, lab[0]) for lab in v.LABS],
        "member_id": [
            (v.MEMBER_ID, f"M{n:07d}") for n in rng.sample(range(members), min(1000, members))
        ],
    }
    return samples
