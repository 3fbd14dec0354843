"""HL7 v2 ADT in over HTTP (`POST /hl7v2`): the shared sample messages compared with the
FHIR-Converter's expected output on key fields, each event's effect on the Encounter,
idempotence on MSH-10, merge, and refusals that store nothing."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx
import pytest
from tests.exchange.hl7 import EXPECTED, post, sample, search, segments, tag


def adt(
    event: str,
    control: str,
    pid3: str,
    *,
    visit: str = "",
    patient_class: str = "I",
    admit: str = "20240101080000+0000",
    discharge: str = "",
    disposition: str = "",
    name: str = "DOE^JANE",
    birth: str = "19600101",
    mrg: str | None = None,
    version: str = "2.5.1",
    location: str = "4EAST^401^A^GENHOSP",
    extra: str = "",
) -> str:
    pv1 = ["PV1", "1", patient_class, location] + [""] * 43
    pv1[7] = "1234^WELBY^MARCUS^^^DR^^^NPI"
    pv1[19] = visit
    pv1[36] = disposition
    pv1[44] = admit
    pv1[45] = discharge
    segments_ = [
        f"MSH|^~\\&|EHR|GENHOSP|CMFHIR|CM|20240101080000+0000||ADT^{event}^ADT_A01|{control}|P|{version}",
        f"EVN|{event}|20240101080000+0000",
        f"PID|1||{pid3}^^^GENHOSP^MR||{name}||{birth}|F",
    ]
    if mrg is not None:
        segments_.append(f"MRG|{mrg}^^^GENHOSP^MR")
    if event != "A40":
        segments_.append("|".join(pv1))
    if extra:
        segments_.append(extra)
    return "\r".join(segments_) + "\r"


def ack_of(response: httpx.Response) -> dict[str, list[str]]:
    return segments(response.text)


def _patient(client: httpx.Client, value: str) -> dict[str, Any]:
    found = search(client, f"Patient?identifier={value}")
    assert len(found) == 1, found
    return found[0]


def _encounters(client: httpx.Client, visit: str) -> list[dict[str, Any]]:
    return search(client, f"Encounter?identifier={visit}")


# -- the shared samples against the FHIR-Converter's expected output -------------------------

SAMPLES = [
    ("ADT-A01-01.hl7", "PATID1234", "40007716"),
    ("ADT-A01-02.hl7", "PATID1234", "40007716"),
    ("ADT-A03-01.hl7", "PATID1234", "40007716"),
    ("ADT-A03-02.hl7", "PATID1234", "40007716"),
    ("ADT-A04-01.hl7", "PATID1234", "40007716"),
    ("ADT-A04-02.hl7", "PATID1234", "40007716"),
    ("ADT-A08-01.hl7", "PATID1234", "40007716"),
    ("ADT-A08-02.hl7", "PATID1234", "40007716"),
    ("ADT01-23.hl7", "10006579", "40007716"),
    ("ADT04-251.hl7", "MRN12345", None),
]


def _expected(name: str, resource_type: str) -> list[dict[str, Any]]:
    bundle = json.loads((EXPECTED / name.replace(".hl7", "-expected.json")).read_text())
    return [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type
    ]


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.parametrize(("name", "mrn", "visit"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_sample_matches_the_converters_key_fields(
    client: httpx.Client, name: str, mrn: str, visit: str | None
) -> None:
    unique = tag()
    if "A08" in name:
        # A08 updates a known patient and visit: admit them first.
        admitted = post(client, sample("ADT-A01-02.hl7", unique, MSG00001="ADMIT"))
        assert ack_of(admitted)["MSA"][1] == "AA", admitted.text
    response = post(client, sample(name, unique))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("x-application/hl7-v2+er7")
    ack = ack_of(response)
    assert ack["MSA"][1] == "AA", response.text
    assert ack["MSH"][8].startswith("ACK")

    patient = _patient(client, f"{mrn}{unique}")
    [expected_patient] = _expected(name, "Patient")
    expected_values = {i["value"] for i in expected_patient["identifier"]}
    assert {i["value"].replace(unique, "") for i in patient["identifier"]} <= expected_values
    assert patient["name"][0]["family"] == expected_patient["name"][0]["family"]
    assert patient.get("birthDate") == expected_patient.get("birthDate")
    assert patient.get("gender") == expected_patient.get("gender")

    expected_encounters = _expected(name, "Encounter")
    if visit is None:
        return
    [encounter] = _encounters(client, f"{visit}{unique}")
    [expected_encounter] = expected_encounters
    assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"
    assert encounter["class"]["code"] == expected_encounter["class"]["code"]
    if "period" in expected_encounter and "start" in expected_encounter["period"]:
        assert _instant(encounter["period"]["start"]) == _instant(
            expected_encounter["period"]["start"]
        )
    if "A03" in name:
        assert encounter["status"] == "finished"


def test_nk1_dg1_in1_become_related_person_condition_coverage(client: httpx.Client) -> None:
    unique = tag()
    assert ack_of(post(client, sample("ADT01-23.hl7", unique)))["MSA"][1] == "AA"
    patient = _patient(client, f"10006579{unique}")
    ref = f"Patient/{patient['id']}"
    related = search(client, f"RelatedPerson?patient={ref}")
    conditions = search(client, f"Condition?patient={ref}")
    coverages = search(client, f"Coverage?beneficiary={ref}")
    assert [r["name"][0]["family"] for r in related] == ["DUCK"]
    assert [c["code"]["coding"][0]["code"] for c in conditions] == ["71596"]
    assert conditions[0]["encounter"]["reference"].startswith("Encounter/")
    assert len(coverages) == 3
    assert sorted(c["payor"][0]["display"] for c in coverages) == [
        "MEDICAL MUTUAL CALIF.",
        "MEDICARE",
        "SELF PAY",
    ]
    # The same content under another control id adds nothing.
    again = sample("ADT01-23.hl7", unique, **{f"599102{unique}": f"599103{unique}"})
    assert ack_of(post(client, again))["MSA"][1] == "AA"
    assert len(search(client, f"RelatedPerson?patient={ref}")) == 1
    assert len(search(client, f"Condition?patient={ref}")) == 1
    assert len(search(client, f"Coverage?beneficiary={ref}")) == 3


def test_provenance_records_the_message(client: httpx.Client) -> None:
    unique = tag()
    assert (
        ack_of(post(client, adt("A01", f"C{unique}", f"P{unique}", visit=f"V{unique}")))["MSA"][1]
        == "AA"
    )
    patient = _patient(client, f"P{unique}")
    [provenance] = search(client, f"Provenance?patient=Patient/{patient['id']}")
    assert provenance["activity"]["coding"][0]["code"] == "A01"
    assert provenance["entity"][0]["what"]["identifier"]["value"] == f"C{unique}"
    targets = {t["reference"].split("/")[0] for t in provenance["target"]}
    assert {"Patient", "Encounter", "Location", "Practitioner"} <= targets


# -- idempotence ---------------------------------------------------------------------------


def test_the_same_message_twice_changes_nothing(client: httpx.Client) -> None:
    unique = tag()
    message = adt("A01", f"C{unique}", f"P{unique}", visit=f"V{unique}")
    first = post(client, message)
    assert ack_of(first)["MSA"][1] == "AA"
    patient = _patient(client, f"P{unique}")
    [encounter] = _encounters(client, f"V{unique}")
    second = post(client, message)
    assert ack_of(second)["MSA"][1] == "AA"
    assert "received before" in ack_of(second)["MSA"][3]
    assert _patient(client, f"P{unique}")["meta"] == patient["meta"]
    assert _encounters(client, f"V{unique}") == [encounter]
    history = client.get(f"Patient/{patient['id']}/_history").json()
    assert len(history["entry"]) == 1


def test_new_messages_for_a_known_visit_update_it_in_place(client: httpx.Client) -> None:
    unique = tag()
    pid, visit = f"P{unique}", f"V{unique}"
    assert ack_of(post(client, adt("A01", f"C1{unique}", pid, visit=visit)))["MSA"][1] == "AA"
    assert ack_of(post(client, adt("A01", f"C2{unique}", pid, visit=visit)))["MSA"][1] == "AA"
    [encounter] = _encounters(client, visit)
    assert encounter["meta"]["versionId"] == "1"  # nothing new: no new version
    assert len(search(client, f"Patient?identifier={pid}")) == 1


# -- what each event does ----------------------------------------------------------------------


def test_discharge_sets_finished_end_and_both_disposition_codings(client: httpx.Client) -> None:
    unique = tag()
    pid, visit = f"P{unique}", f"V{unique}"
    assert ack_of(post(client, adt("A01", f"C1{unique}", pid, visit=visit)))["MSA"][1] == "AA"
    discharge = adt(
        "A03",
        f"C2{unique}",
        pid,
        visit=visit,
        discharge="20240105120000+0000",
        disposition="03",
    )
    assert ack_of(post(client, discharge))["MSA"][1] == "AA"
    [encounter] = _encounters(client, visit)
    assert encounter["status"] == "finished"
    assert _instant(encounter["period"]["end"]) == _instant("2024-01-05T12:00:00Z")
    codings = encounter["hospitalization"]["dischargeDisposition"]["coding"]
    assert [(c["system"], c["code"]) for c in codings] == [
        ("http://terminology.hl7.org/CodeSystem/discharge-disposition", "snf"),
        ("https://www.nubc.org/CodeSystem/PatDischargeStatus", "03"),
    ]
    # A13 (cancel discharge) reopens it.
    reopen = adt("A13", f"C3{unique}", pid, visit=visit)
    assert ack_of(post(client, reopen))["MSA"][1] == "AA"
    [encounter] = _encounters(client, visit)
    assert encounter["status"] == "in-progress"
    assert "end" not in encounter["period"]
    assert "dischargeDisposition" not in encounter.get("hospitalization", {})


def test_cancel_admit_cancels_the_encounter(client: httpx.Client) -> None:
    unique = tag()
    pid, visit = f"P{unique}", f"V{unique}"
    assert ack_of(post(client, adt("A01", f"C1{unique}", pid, visit=visit)))["MSA"][1] == "AA"
    assert ack_of(post(client, adt("A11", f"C2{unique}", pid, visit=visit)))["MSA"][1] == "AA"
    [encounter] = _encounters(client, visit)
    assert encounter["status"] == "cancelled"


def test_transfer_moves_the_location(client: httpx.Client) -> None:
    unique = tag()
    pid, visit = f"P{unique}", f"V{unique}"
    assert ack_of(post(client, adt("A01", f"C1{unique}", pid, visit=visit)))["MSA"][1] == "AA"
    moved = adt("A02", f"C2{unique}", pid, visit=visit, location=f"ICU^9^B^GENHOSP{unique}")
    assert ack_of(post(client, moved))["MSA"][1] == "AA"
    [encounter] = _encounters(client, visit)
    assert [p["status"] for p in encounter["location"]] == ["completed", "active"]
    back = adt("A12", f"C3{unique}", pid, visit=visit)
    assert ack_of(post(client, back))["MSA"][1] == "AA"
    [encounter] = _encounters(client, visit)
    assert encounter["status"] == "in-progress"


def test_outpatient_to_inpatient_changes_the_class(client: httpx.Client) -> None:
    unique = tag()
    pid, visit = f"P{unique}", f"V{unique}"
    registered = adt("A04", f"C1{unique}", pid, visit=visit, patient_class="O")
    assert ack_of(post(client, registered))["MSA"][1] == "AA"
    [encounter] = _encounters(client, visit)
    assert (encounter["class"]["code"], encounter["status"]) == ("AMB", "planned")
    admitted = adt("A06", f"C2{unique}", pid, visit=visit, patient_class="I")
    assert ack_of(post(client, admitted))["MSA"][1] == "AA"
    [encounter] = _encounters(client, visit)
    assert (encounter["class"]["code"], encounter["status"]) == ("IMP", "in-progress")
    back = adt("A07", f"C3{unique}", pid, visit=visit, patient_class="O")
    assert ack_of(post(client, back))["MSA"][1] == "AA"
    assert _encounters(client, visit)[0]["class"]["code"] == "AMB"
    preadmit = adt("A05", f"C4{unique}", pid, visit=f"W{unique}", patient_class="P")
    assert ack_of(post(client, preadmit))["MSA"][1] == "AA"
    assert _encounters(client, f"W{unique}")[0]["status"] == "planned"


def test_a08_updates_without_creating(client: httpx.Client) -> None:
    unique = tag()
    pid, visit = f"P{unique}", f"V{unique}"
    unknown = post(client, adt("A08", f"C0{unique}", pid, visit=visit))
    assert ack_of(unknown)["MSA"][1] == "AE"
    assert unknown.status_code == 422
    assert "204" in ack_of(unknown)["ERR"][3]
    assert search(client, f"Patient?identifier={pid}") == []
    assert ack_of(post(client, adt("A01", f"C1{unique}", pid, visit=visit)))["MSA"][1] == "AA"
    renamed = adt("A08", f"C2{unique}", pid, visit=visit, name="ROE^JANET")
    assert ack_of(post(client, renamed))["MSA"][1] == "AA"
    patient = _patient(client, pid)
    assert patient["name"][0]["family"] == "ROE"
    assert len(_encounters(client, visit)) == 1
    # An A08 for a visit not known updates the patient and creates no encounter.
    other = adt("A08", f"C3{unique}", pid, visit=f"X{unique}", name="ROE^JAN")
    assert ack_of(post(client, other))["MSA"][1] == "AA"
    assert _encounters(client, f"X{unique}") == []


def test_merge_moves_the_record_to_the_survivor(client: httpx.Client) -> None:
    unique = tag()
    survivor_id, prior_id = f"S{unique}", f"M{unique}"
    assert (
        ack_of(post(client, adt("A04", f"C1{unique}", survivor_id, visit=f"V1{unique}")))["MSA"][1]
        == "AA"
    )
    assert (
        ack_of(post(client, adt("A01", f"C2{unique}", prior_id, visit=f"V2{unique}")))["MSA"][1]
        == "AA"
    )
    prior = _patient(client, prior_id)
    merge = adt("A40", f"C3{unique}", survivor_id, mrg=prior_id)
    response = post(client, merge)
    assert ack_of(response)["MSA"][1] == "AA", response.text
    survivor = next(
        p for p in search(client, f"Patient?identifier={survivor_id}") if p["id"] != prior["id"]
    )
    values = {i["value"] for i in survivor["identifier"]}
    assert {survivor_id, prior_id} <= values
    assert survivor["link"] == [
        {"other": {"reference": f"Patient/{prior['id']}"}, "type": "replaces"}
    ]
    merged = client.get(f"Patient/{prior['id']}").json()
    assert merged["active"] is False
    assert merged["link"] == [
        {"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}
    ]
    [moved] = _encounters(client, f"V2{unique}")
    assert moved["subject"]["reference"] == f"Patient/{survivor['id']}"
    # Later messages naming the old identifier reach the survivor.
    later = adt("A08", f"C4{unique}", prior_id, name="MERGED^ONE")
    assert ack_of(post(client, later))["MSA"][1] == "AA"
    assert client.get(f"Patient/{survivor['id']}").json()["name"][0]["family"] == "MERGED"


def test_merge_of_an_unknown_patient_is_refused(client: httpx.Client) -> None:
    unique = tag()
    assert (
        ack_of(post(client, adt("A04", f"C1{unique}", f"S{unique}", visit=f"V{unique}")))["MSA"][1]
        == "AA"
    )
    response = post(client, adt("A40", f"C2{unique}", f"S{unique}", mrg=f"NOPE{unique}"))
    ack = ack_of(response)
    assert ack["MSA"][1] == "AE"
    assert ack["ERR"][2] == "MRG^1^1"


# -- refusals: an ACK saying what is wrong, nothing stored -------------------------------------


def test_missing_pid3_is_refused_and_stores_nothing(client: httpx.Client) -> None:
    unique = tag()
    message = adt("A01", f"C{unique}", "", visit=f"V{unique}", name=f"NOID{unique}^X")
    response = post(client, message)
    ack = ack_of(response)
    assert response.status_code == 422
    assert ack["MSA"][1] == "AE"
    assert ack["ERR"][2] == "PID^1^3"
    assert ack["ERR"][3].startswith("101^")
    assert "PID-3" in ack["ERR"][8]
    assert search(client, f"Patient?family=NOID{unique}") == []
    assert _encounters(client, f"V{unique}") == []


def test_unknown_event_is_rejected(client: httpx.Client) -> None:
    unique = tag()
    response = post(client, adt("A99", f"C{unique}", f"P{unique}", visit=f"V{unique}"))
    ack = ack_of(response)
    assert response.status_code == 400
    assert ack["MSA"][1] == "AR"
    assert ack["ERR"][3].startswith("201^")
    assert search(client, f"Patient?identifier=P{unique}") == []


@pytest.mark.parametrize("admit", ["20241345", "2024-01-01", "20240230", "202401011261"], ids=str)
def test_bad_dates_are_refused_and_store_nothing(client: httpx.Client, admit: str) -> None:
    unique = tag()
    response = post(client, adt("A01", f"C{unique}", f"P{unique}", visit=f"V{unique}", admit=admit))
    ack = ack_of(response)
    assert ack["MSA"][1] == "AE"
    assert ack["ERR"][2] == "PV1^1^44"
    assert ack["ERR"][3].startswith("102^")
    assert search(client, f"Patient?identifier=P{unique}") == []


def test_version_2_3_error_segment(client: httpx.Client) -> None:
    unique = tag()
    response = post(client, adt("A01", f"C{unique}", "", version="2.3"))
    ack = ack_of(response)
    assert ack["MSA"][1] == "AE"
    assert ack["ERR"][1].startswith("PID^1^3^101&")


def test_unsupported_version_and_non_adt_are_rejected(client: httpx.Client) -> None:
    unique = tag()
    assert (
        ack_of(post(client, adt("A01", f"C{unique}", f"P{unique}", version="2.2")))["MSA"][1]
        == "AR"
    )
    oru = adt("A01", f"D{unique}", f"P{unique}").replace("ADT^A01^ADT_A01", "ORU^R01")
    assert ack_of(post(client, oru))["MSA"][1] == "AR"


def test_garbage_gets_a_reject(client: httpx.Client) -> None:
    response = post(client, "hello")
    assert response.status_code == 400
    assert ack_of(response)["MSA"][1] == "AR"


def test_other_content_types_get_415(client: httpx.Client) -> None:
    unique = tag()
    response = post(
        client, adt("A01", f"C{unique}", f"P{unique}"), **{"Content-Type": "application/json"}
    )
    assert response.status_code == 415
    assert response.json()["resourceType"] == "OperationOutcome"
    plain = post(client, adt("A01", f"C{unique}", f"P{unique}"), **{"Content-Type": "text/plain"})
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/plain")
