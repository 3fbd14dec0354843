"""The care-gap rules against their golden cases, with no database.

Each `golden/<rule>/<case>.json` holds a Bundle of one member's resources, the `as_of`
instant, and the gaps the rule must return (rule, key, status, evidence; optionally the due
date and words the detail or mitigation must contain).
"""

from __future__ import annotations

import ast
import json
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from cmfhir.gaps.config import CareGapConfig, CareGapConfigError, load_config, parse_config
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.rules import RULES, evaluate_all

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(GOLDEN.glob("*/*.json"))
RULES_BY_CODE = {rule.CODE: rule for rule in RULES}
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.fixture(scope="module")
def config() -> CareGapConfig:
    return load_config()


def snapshot_of(bundle: dict[str, Any]) -> MemberSnapshot:
    resources: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        resources[resource["resourceType"]].append(resource)
    (patient,) = resources["Patient"]
    return MemberSnapshot(patient_id=patient["id"], resources=dict(resources))


def shape(gap: Gap) -> tuple[str, str, str, list[str]]:
    return (gap.rule, gap.key, gap.status, sorted(gap.evidence))


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_golden(path: Path, config: CareGapConfig) -> None:
    case = json.loads(path.read_text())
    rule = RULES_BY_CODE[path.parent.name]
    as_of = datetime.fromisoformat(case["as_of"])
    gaps = rule.evaluate(snapshot_of(case["bundle"]), as_of, config)

    expected = sorted(
        (e["rule"], e["key"], e["status"], sorted(e["evidence"])) for e in case["expected"]
    )
    assert sorted(shape(g) for g in gaps) == expected, case["description"]
    by_key = {g.key: g for g in gaps}
    for want in case["expected"]:
        gap = by_key[want["key"]]
        assert gap.detail, "every gap says what it is about"
        if "due" in want:
            assert gap.due == date.fromisoformat(want["due"])
        if "detail_contains" in want:
            assert want["detail_contains"] in gap.detail
        if want["status"] == "closed-gap":
            assert gap.mitigation, "a closed gap says why it closed"
        else:
            assert gap.mitigation is None
        if "mitigation_contains" in want:
            assert want["mitigation_contains"] in (gap.mitigation or "")


def test_every_rule_has_golden_cases_of_each_status() -> None:
    # Rules whose gap opens on an event nobody can foresee, with no deadline to miss
    # (docs/care-gaps.md, "Prospective state"), have no prospective status.
    no_prospective = {"new-specialist", "new-medication", "missed-appointment"}
    seen: dict[str, set[str]] = defaultdict(set)
    for path in CASES:
        for gap in json.loads(path.read_text())["expected"]:
            seen[path.parent.name].add(gap["status"])
    for code in RULES_BY_CODE:
        wanted = {"open-gap", "closed-gap"}
        if code not in no_prospective:
            wanted.add("prospective-gap")
        assert wanted <= seen[code], f"{code} lacks golden cases for {wanted - seen[code]}"
    assert set(seen) == set(RULES_BY_CODE)


def test_rules_are_the_eleven_of_the_code_system() -> None:
    code_system = json.loads(
        (ROOT / "profiles" / "content" / "CodeSystem-care-gap.json").read_text()
    )
    assert code_system["url"] == "https://cmfhir.org/fhir/CodeSystem/care-gap"
    codes = [concept["code"] for concept in code_system["concept"]]
    assert codes == [rule.CODE for rule in RULES]
    assert all(concept.get("definition") for concept in code_system["concept"])
    assert code_system["count"] == len(codes)


def test_configuration_names_every_rule(config: CareGapConfig) -> None:
    assert [code for code, _ in config.rules.items()] == [rule.CODE for rule in RULES]


def test_evaluate_all_is_every_rule_in_order(config: CareGapConfig) -> None:
    case = json.loads((GOLDEN / "transition-follow-up" / "open-no-contact.json").read_text())
    gaps = evaluate_all(snapshot_of(case["bundle"]), datetime.fromisoformat(case["as_of"]), config)
    order = [rule.CODE for rule in RULES]
    assert [g.rule for g in gaps] == sorted((g.rule for g in gaps), key=order.index)
    assert {"transition-follow-up", "assessment-overdue", "contact-requirement"} <= {
        g.rule for g in gaps
    }


def test_no_thresholds_or_code_lists_in_the_rules() -> None:
    """Numbers and codes live in profiles/care-gaps.json: a rule module holds no number but 0
    and 1, and no code of a terminology."""
    folder = ROOT / "src" / "cmfhir" / "gaps" / "rules"
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
            and (body := node.body)
            and isinstance(body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
                continue
            if id(node) in docstrings:
                continue
            if isinstance(node.value, int | float) and path.name != "_common.py":
                assert node.value in (0, 1), f"{path.name}:{node.lineno}: {node.value}"
            if isinstance(node.value, str):
                text = node.value
                assert "http://" not in text and "https://" not in text, (
                    f"{path.name}:{node.lineno}: {text}"
                )


def test_as_of_must_be_aware(config: CareGapConfig) -> None:
    case = json.loads((GOLDEN / "transition-follow-up" / "open-no-contact.json").read_text())
    with pytest.raises(ValueError, match="timezone-aware"):
        naive = datetime.fromisoformat("2026-10-12T12:00:00")
        evaluate_all(snapshot_of(case["bundle"]), naive, config)


def test_config_error_names_the_field() -> None:
    data = json.loads((ROOT / "profiles" / "care-gaps.json").read_text())
    data["rules"]["transition-follow-up"]["contact"]["window"] = {"days": -1}
    data["rules"]["contact-requirement"]["requirements"][0]["acuityTier"] = "urgent"
    del data["rules"]["no-care-manager"]["careManagerRoles"]
    with pytest.raises(CareGapConfigError) as raised:
        parse_config(data, "care-gaps.json")
    message = str(raised.value)
    assert "rules.transition-follow-up.contact.window.days" in message
    assert "rules.no-care-manager.careManagerRoles: Field required" in message


def test_config_error_unknown_tier_and_program() -> None:
    data = json.loads((ROOT / "profiles" / "care-gaps.json").read_text())
    data["rules"]["contact-requirement"]["requirements"][0]["acuityTier"] = "urgent"
    with pytest.raises(CareGapConfigError, match="acuity tier 'urgent'"):
        parse_config(data)
    data = json.loads((ROOT / "profiles" / "care-gaps.json").read_text())
    data["rules"]["sdoh-referral"]["program"] = "pcm"
    with pytest.raises(CareGapConfigError, match=r"'pcm' is not in enrollment\.programs"):
        parse_config(data)
    data = json.loads((ROOT / "profiles" / "care-gaps.json").read_text())
    data["timeZone"] = "Mars/Olympus"
    with pytest.raises(CareGapConfigError, match="unknown time zone"):
        parse_config(data)


def test_config_error_a_code_in_two_classes() -> None:
    data = json.loads((ROOT / "profiles" / "care-gaps.json").read_text())
    classes = data["rules"]["medication-adherence"]["classes"]
    rosuvastatin = {"system": RXNORM, "code": "301542"}
    classes["diabetes"]["drugs"] = {"metformin": [{"system": RXNORM, "code": "6809"}, rosuvastatin]}
    with pytest.raises(CareGapConfigError, match="is in both statins/rosuvastatin"):
        parse_config(data)


def test_config_error_an_unknown_value_set(tmp_path: Path) -> None:
    data = json.loads((ROOT / "profiles" / "care-gaps.json").read_text())
    data["rules"]["medication-adherence"]["classes"]["statins"]["valueSet"] = "https://x/VS"
    with pytest.raises(
        CareGapConfigError, match=r"classes\.statins\.valueSet: no ValueSet https://x/VS"
    ):
        parse_config(data)
    empty = {"resourceType": "ValueSet", "url": "https://x/VS", "compose": {"include": [{}]}}
    (tmp_path / "ValueSet-x.json").write_text(json.dumps(empty))
    with pytest.raises(CareGapConfigError, match=r"include\[0\] lists no concepts"):
        parse_config(data, content_dir=tmp_path)


def test_the_pdc_classes_are_the_value_sets(config: CareGapConfig) -> None:
    """Each class's drugs are read from its ValueSet in profiles/content/: one
    compose.include per target drug, led by its RxNorm ingredient."""
    from cmfhir.resources.version_validation import validate_for_version

    raw = json.loads((ROOT / "profiles" / "care-gaps.json").read_text())
    classes = raw["rules"]["medication-adherence"]["classes"]
    rule = config.rules.medication_adherence
    assert set(rule.classes) == {"statins", "ras-antagonists", "diabetes", "antiretrovirals"}
    for class_id, drug_class in rule.classes.items():
        assert "drugs" not in classes[class_id]
        url = classes[class_id]["valueSet"]
        assert drug_class.value_set == url
        path = ROOT / "profiles" / "content" / f"ValueSet-pdc-{class_id}.json"
        value_set = json.loads(path.read_text())
        validate_for_version(value_set, "4.0", expected_type="ValueSet")
        assert value_set["url"] == url
        includes = value_set["compose"]["include"]
        assert list(drug_class.drugs) == [i["concept"][0]["display"] for i in includes]
        for include, codes in zip(includes, drug_class.drugs.values(), strict=True):
            assert include["system"] == RXNORM
            assert [c.code for c in codes] == [c["code"] for c in include["concept"]]
    # The classes DOMAIN.md 9.5 names, by ingredient.
    drugs = {k: set(v.drugs) for k, v in rule.classes.items()}
    assert {"atorvastatin", "rosuvastatin", "simvastatin", "pitavastatin"} <= drugs["statins"]
    assert {"lisinopril", "losartan", "valsartan", "aliskiren"} <= drugs["ras-antagonists"]
    assert {"metformin", "glipizide", "sitagliptin", "empagliflozin", "semaglutide"} <= drugs[
        "diabetes"
    ]
    assert {"tirzepatide", "repaglinide"} <= drugs["diabetes"]


def test_config_from_the_profiles_folder(config: CareGapConfig) -> None:
    assert load_config(ROOT / "profiles") is config
    assert load_config(str(ROOT / "profiles" / "care-gaps.json")) is config


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CareGapConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": ')
    with pytest.raises(CareGapConfigError, match="not JSON"):
        load_config(broken)


def test_config_changes_the_rule(config: CareGapConfig) -> None:
    """The window comes from the configuration: with 14 days the 3 Oct discharge is still
    prospective on 12 Oct."""
    case = json.loads((GOLDEN / "transition-follow-up" / "open-no-contact.json").read_text())
    data = json.loads((ROOT / "profiles" / "care-gaps.json").read_text())
    data["rules"]["transition-follow-up"]["contact"]["window"]["days"] = 14
    wider = parse_config(data)
    (gap,) = RULES_BY_CODE["transition-follow-up"].evaluate(
        snapshot_of(case["bundle"]), datetime.fromisoformat(case["as_of"]), wider
    )
    assert (gap.status, gap.due) == ("prospective-gap", date(2026, 10, 17))


def test_every_requirement_is_sourced(config: CareGapConfig) -> None:
    raw = json.loads((ROOT / "profiles" / "care-gaps.json").read_text())

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "window" in node or "threshold" in node:
                assert node.get("source"), where
                assert isinstance(node.get("verified"), bool), where
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")

    walk(raw, "care-gaps")
    # The NC TCM values are not verified in the manual (DOMAIN.md section 9).
    rules = config.rules
    assert not rules.assessment_overdue.after_enrollment.verified
    assert not rules.care_plan_overdue.after_assessment.verified
    assert not any(r.verified for r in rules.contact_requirement.requirements)


SYNTHEA = sorted((ROOT / "tests" / "data" / "synthea").glob("*.json"))


@pytest.mark.parametrize("path", SYNTHEA, ids=lambda p: p.stem[:20])
def test_every_rule_reads_a_synthea_record(path: Path, config: CareGapConfig) -> None:
    """Real-world shapes (Synthea R4 bundles, with an enrollment added) break no rule, and
    each gap is well formed and one per identifier."""
    bundle = json.loads(path.read_text())
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    ends = [
        e["resource"]["period"]["end"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Encounter" and "end" in e["resource"].get("period", {})
    ]
    as_of = max(datetime.fromisoformat(end) for end in ends)
    enrollment = {
        "resourceType": "EpisodeOfCare",
        "id": "tcm",
        "status": "active",
        "type": [
            {"coding": [{"system": "https://cmfhir.org/fhir/CodeSystem/program", "code": "tcm"}]}
        ],
        "patient": {"reference": f"Patient/{patient['id']}"},
        "period": {"start": "2000-01-01"},
        "extension": [
            {
                "url": "https://cmfhir.org/fhir/StructureDefinition/acuity-tier",
                "valueCode": "moderate",
            }
        ],
    }
    bundle["entry"].append({"resource": enrollment})
    gaps = evaluate_all(snapshot_of(bundle), as_of, config)
    assert {g.rule for g in gaps} >= {
        "assessment-overdue",
        "contact-requirement",
        "no-care-manager",
    }
    identifiers = [g.identifier(patient["id"]) for g in gaps]
    assert len(identifiers) == len(set(identifiers))
    for gap in gaps:
        assert gap.status in ("open-gap", "prospective-gap", "closed-gap")
        assert gap.detail and gap.evidence
        assert (gap.mitigation is not None) == (gap.status == "closed-gap")
