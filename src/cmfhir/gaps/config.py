"""The care-gap rules' configuration: `profiles/care-gaps.json`, typed.

Every threshold, window and code list a rule uses lives in that one versioned file, each
requirement with its program, population, acuity tier, source and whether the source is
verified; the rules hold no numbers or code lists of their own. `load_config()` reads and
checks it once; a bad file raises `CareGapConfigError` naming the file and each bad field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "AssessmentOverdue",
    "BhFollowUp",
    "CalendarWindow",
    "CareGapConfig",
    "CareGapConfigError",
    "CarePlanOverdue",
    "CodeList",
    "Coding",
    "ContactRequirement",
    "CountRequirement",
    "DayRequirement",
    "DayWindow",
    "DrugClass",
    "Enrollment",
    "Exclusion",
    "MedicationAdherence",
    "MissedAppointment",
    "NewMedication",
    "NewSpecialist",
    "NoCareManager",
    "QualifyingContact",
    "RatioRequirement",
    "Rules",
    "SdohNeed",
    "SdohReferral",
    "TransitionFollowUp",
    "default_config_path",
    "load_config",
    "matches_any",
    "parse_config",
]

ANY_TIER = "any"
CONFIG_FILE = "care-gaps.json"


class CareGapConfigError(ValueError):
    """The configuration file is missing, not JSON, or does not match the schema."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Coding(_Model):
    """A code to match (`prefix`: every code that starts with `code`)."""

    system: str
    code: str
    display: str | None = None
    prefix: bool = False

    def matches(self, coding: Any) -> bool:
        if not isinstance(coding, Mapping) or coding.get("system") != self.system:
            return False
        code = coding.get("code")
        if not isinstance(code, str):
            return False
        return code.startswith(self.code) if self.prefix else code == self.code


class _Matcher:
    """One code list as a set lookup (plus the prefixes), built once per list."""

    __slots__ = ("exact", "prefixes", "specs")

    def __init__(self, specs: tuple[Coding, ...]) -> None:
        self.specs = specs
        self.exact = {(s.system, s.code) for s in specs if not s.prefix}
        self.prefixes = [(s.system, s.code) for s in specs if s.prefix]

    def __call__(self, coding: Any) -> bool:
        # Parsed JSON: a dict (isinstance against the Mapping ABC costs several times more).
        if not isinstance(coding, dict):
            return False
        system, code = coding.get("system"), coding.get("code")
        if not isinstance(code, str):
            return False
        if (system, code) in self.exact:
            return True
        return any(system == s and code.startswith(p) for s, p in self.prefixes)


# Keyed by the identity of the configuration's (immutable) code lists.
_MATCHERS: dict[int, _Matcher] = {}
_MATCHERS_MAX = 4096


def matches_any(codings: tuple[Coding, ...], coding: Any) -> bool:
    """Whether `coding` (a FHIR Coding) is one of `codings`."""
    matcher = _MATCHERS.get(id(codings))
    if matcher is None or matcher.specs is not codings:
        if len(_MATCHERS) >= _MATCHERS_MAX:
            _MATCHERS.clear()
        matcher = _MATCHERS[id(codings)] = _Matcher(codings)
    return matcher(coding)


class CodeList(_Model):
    """A sourced list of codes."""

    codes: tuple[Coding, ...]
    source: str
    verified: bool


class DayWindow(_Model):
    days: int = Field(ge=0)


class CalendarWindow(_Model):
    calendar: Literal["month", "quarter", "year"]


class _Requirement(_Model):
    acuity_tier: str = ANY_TIER
    metric: str
    source: str = Field(min_length=1)
    verified: bool


class DayRequirement(_Requirement):
    """A number of days (a deadline, an interval, a horizon)."""

    window: DayWindow

    @property
    def days(self) -> int:
        return self.window.days


class CountRequirement(_Requirement):
    """At least `threshold` of something in each window."""

    threshold: int = Field(ge=0)
    window: DayWindow | CalendarWindow


class RatioRequirement(_Requirement):
    """A proportion (0..1) to reach over a window."""

    threshold: float = Field(ge=0, le=1)
    window: DayWindow


class Enrollment(_Model):
    programs: dict[str, Coding]
    statuses: tuple[str, ...]
    acuity_tier_extension: str
    acuity_tiers: tuple[str, ...]


class QualifyingContact(_Model):
    statuses: tuple[str, ...]
    media: tuple[Coding, ...]
    in_person_media: tuple[Coding, ...]
    sender_types: tuple[str, ...]
    source: str
    verified: bool


class _Rule(_Model):
    program: str
    population: str
    enrolled_only: bool


class TransitionFollowUp(_Rule):
    encounter_classes: tuple[Coding, ...]
    encounter_statuses: tuple[str, ...]
    contact: DayRequirement
    lookback: DayRequirement


class BhFollowUp(_Rule):
    encounter_classes: tuple[Coding, ...]
    encounter_statuses: tuple[str, ...]
    mental_illness_diagnoses: CodeList
    visit_classes: tuple[Coding, ...]
    visit_statuses: tuple[str, ...]
    mental_health_specialties: CodeList
    visit: DayRequirement
    lookback: DayRequirement


class NewSpecialist(_Rule):
    encounter_classes: tuple[Coding, ...]
    encounter_statuses: tuple[str, ...]
    specialty_system: str
    primary_care_specialties: CodeList
    prior_visits: DayRequirement
    lookback: DayRequirement


class NewMedication(_Rule):
    resource_types: tuple[
        Literal["MedicationStatement", "MedicationRequest", "MedicationDispense"], ...
    ]
    ignored_statuses: tuple[str, ...]
    reconciliation_procedures: CodeList
    procedure_statuses: tuple[str, ...]
    prior_records: DayRequirement
    lookback: DayRequirement


class MissedAppointment(_Rule):
    missed_statuses: tuple[str, ...]
    kept_statuses: tuple[str, ...]
    source: str
    verified: bool
    lookback: DayRequirement


class AssessmentOverdue(_Rule):
    questionnaires: tuple[str, ...]
    response_statuses: tuple[str, ...]
    discharge_classes: tuple[Coding, ...]
    encounter_statuses: tuple[str, ...]
    after_enrollment: DayRequirement
    every: DayRequirement
    after_discharge: DayRequirement
    notice: DayRequirement


class CarePlanOverdue(_Rule):
    statuses: tuple[str, ...]
    categories: tuple[Coding, ...]
    assessment_questionnaires: tuple[str, ...]
    assessment_statuses: tuple[str, ...]
    after_assessment: DayRequirement
    every: DayRequirement
    notice: DayRequirement


class DrugClass(_Model):
    """A therapeutic class: its drugs (the same drug = the same key) and their codes,
    either listed here or read from the ValueSet `value_set` names (one compose.include per
    drug, keyed by its first concept's display: the RxNorm ingredient)."""

    display: str
    value_set: str | None = None
    drugs: dict[str, tuple[Coding, ...]]
    pdc_threshold: RatioRequirement | None = None
    source: str
    verified: bool


class Exclusion(_Model):
    """Members with one of `codes` recorded, or dispensed one of `dispensed`, in the
    measurement period are not measured for the classes in `applies_to` (`*`: all)."""

    display: str
    applies_to: tuple[str, ...]
    codes: tuple[Coding, ...]
    dispensed: tuple[Coding, ...]
    source: str
    verified: bool

    def applies(self, class_id: str) -> bool:
        return "*" in self.applies_to or class_id in self.applies_to


class MedicationAdherence(_Rule):
    dispense_statuses: tuple[str, ...]
    # A Condition counts for an exclusion with one of these clinical statuses (or none);
    # any resource with one of `ignored_statuses` (status or verificationStatus) never does.
    condition_clinical_statuses: tuple[str, ...]
    ignored_statuses: tuple[str, ...]
    measurement: DayRequirement
    minimum_fills: CountRequirement
    minimum_treatment: DayRequirement
    pdc_threshold: RatioRequirement
    rxnorm_system: str
    classes: dict[str, DrugClass]
    exclusions: dict[str, Exclusion]

    @model_validator(mode="after")
    def _check(self) -> MedicationAdherence:
        seen: dict[tuple[str, str], str] = {}
        for class_id, drug_class in self.classes.items():
            for drug, codes in drug_class.drugs.items():
                for coding in codes:
                    key = (coding.system, coding.code)
                    if key in seen:
                        raise ValueError(
                            f"code {coding.system}|{coding.code} is in both {seen[key]} "
                            f"and {class_id}/{drug}"
                        )
                    seen[key] = f"{class_id}/{drug}"
        for exclusion_id, exclusion in self.exclusions.items():
            unknown = [c for c in exclusion.applies_to if c != "*" and c not in self.classes]
            if unknown:
                raise ValueError(f"exclusion {exclusion_id} applies to unknown classes {unknown}")
        return self

    def threshold(self, class_id: str) -> RatioRequirement:
        drug_class = self.classes.get(class_id)
        if drug_class is not None and drug_class.pdc_threshold is not None:
            return drug_class.pdc_threshold
        return self.pdc_threshold


class ContactRequirement(_Rule):
    measure_partial_first_period: bool
    requirements: tuple[CountRequirement, ...]
    lookback: DayRequirement

    @field_validator("requirements")
    @classmethod
    def _calendar(cls, value: tuple[CountRequirement, ...]) -> tuple[CountRequirement, ...]:
        for index, requirement in enumerate(value):
            if not isinstance(requirement.window, CalendarWindow):
                raise ValueError(f"requirements[{index}]: the window must be a calendar period")
            if requirement.metric not in ("qualifying-contacts", "in-person-contacts"):
                raise ValueError(
                    f"requirements[{index}]: metric must be qualifying-contacts or "
                    "in-person-contacts"
                )
        return value


class NoCareManager(_Rule):
    care_team_statuses: tuple[str, ...]
    care_manager_roles: tuple[Coding, ...]
    source: str
    verified: bool
    # A care manager whose assignment ends within this many days, with no other to follow,
    # makes the gap prospective.
    notice: DayRequirement


class SdohNeed(_Model):
    display: str
    link_ids: tuple[str, ...]
    codes: tuple[Coding, ...]


class SdohNeeds(_Model):
    domains: dict[str, SdohNeed]
    source: str
    verified: bool


class SdohReferral(_Rule):
    questionnaires: tuple[str, ...]
    response_statuses: tuple[str, ...]
    positive_answers: tuple[Coding, ...]
    help_link_ids: tuple[str, ...]
    declined_answers: tuple[Coding, ...]
    condition_statuses: tuple[str, ...]
    ignored_condition_verifications: tuple[str, ...]
    ignored_referral_statuses: tuple[str, ...]
    needs: SdohNeeds
    referral: DayRequirement
    lookback: DayRequirement


class Rules(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    transition_follow_up: TransitionFollowUp = Field(alias="transition-follow-up")
    bh_follow_up: BhFollowUp = Field(alias="bh-follow-up")
    new_specialist: NewSpecialist = Field(alias="new-specialist")
    new_medication: NewMedication = Field(alias="new-medication")
    missed_appointment: MissedAppointment = Field(alias="missed-appointment")
    assessment_overdue: AssessmentOverdue = Field(alias="assessment-overdue")
    care_plan_overdue: CarePlanOverdue = Field(alias="care-plan-overdue")
    medication_adherence: MedicationAdherence = Field(alias="medication-adherence")
    contact_requirement: ContactRequirement = Field(alias="contact-requirement")
    no_care_manager: NoCareManager = Field(alias="no-care-manager")
    sdoh_referral: SdohReferral = Field(alias="sdoh-referral")

    def items(self) -> list[tuple[str, _Rule]]:
        """(rule code, its configuration) for every rule."""
        return [
            (str(field.alias), getattr(self, name))
            for name, field in type(self).model_fields.items()
        ]


class CareGapConfig(_Model):
    version: str = Field(min_length=1)
    date: str
    description: str
    time_zone: str
    gap_identifier_system: str
    # The coding the engine puts on the mitigations it writes itself; any other mitigation
    # is a person's acknowledgement.
    engine_mitigation_system: str
    enrollment: Enrollment
    qualifying_contact: QualifyingContact
    rules: Rules

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _references(self) -> CareGapConfig:
        tiers = {ANY_TIER, *self.enrollment.acuity_tiers}
        for code, rule in self.rules.items():
            if rule.program not in self.enrollment.programs:
                raise ValueError(
                    f"rules.{code}.program {rule.program!r} is not in enrollment.programs"
                )
            for name, value in rule:
                for requirement in value if isinstance(value, tuple) else (value,):
                    if isinstance(requirement, _Requirement) and (
                        requirement.acuity_tier not in tiers
                    ):
                        raise ValueError(
                            f"rules.{code}.{name}: acuity tier {requirement.acuity_tier!r} "
                            f"is not one of {sorted(tiers)}"
                        )
        return self

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def program(self, code: str) -> Coding:
        return self.enrollment.programs[code]


def default_config_path() -> Path:
    """`profiles/care-gaps.json` beside `src/` (as cmfhir.config.default_profiles_dir)."""
    return Path(__file__).resolve().parents[3] / "profiles" / CONFIG_FILE


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _value_sets(content_dir: Path) -> dict[str, dict[str, Any]]:
    """The ValueSets of profiles/content/, by canonical URL."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(content_dir.glob("ValueSet-*.json")):
        try:
            resource = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CareGapConfigError(f"{path}: not a readable ValueSet: {exc}") from None
        if isinstance(resource, dict) and isinstance(resource.get("url"), str):
            found[resource["url"]] = resource
    return found


def _drugs_of(value_set: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """A class's drugs from its ValueSet: one `compose.include` per drug, named by its first
    concept's display (the ingredient), holding every concept of that include."""
    drugs: dict[str, list[dict[str, Any]]] = {}
    for index, include in enumerate((value_set.get("compose") or {}).get("include") or ()):
        concepts = include.get("concept") or []
        system = include.get("system")
        if not concepts or not isinstance(system, str):
            raise ValueError(f"compose.include[{index}] lists no concepts of a system")
        name = str(concepts[0].get("display") or concepts[0].get("code"))
        drugs.setdefault(name, []).extend(
            {"system": system, "code": c.get("code"), "display": c.get("display")} for c in concepts
        )
    return drugs


def _resolve_value_sets(data: Any, content_dir: Path) -> Any:
    """`rules.medication-adherence.classes.*.valueSet` replaced by the drugs it lists."""
    try:
        classes = data["rules"]["medication-adherence"]["classes"]
    except (KeyError, TypeError):
        return data
    if not isinstance(classes, dict) or not any(
        isinstance(c, dict) and "valueSet" in c and "drugs" not in c for c in classes.values()
    ):
        return data
    value_sets = _value_sets(content_dir)
    resolved = {}
    for class_id, drug_class in classes.items():
        if isinstance(drug_class, dict) and "valueSet" in drug_class and "drugs" not in drug_class:
            where = f"rules.medication-adherence.classes.{class_id}.valueSet"
            value_set = value_sets.get(str(drug_class["valueSet"]))
            if value_set is None:
                raise CareGapConfigError(
                    f"{where}: no ValueSet {drug_class['valueSet']} in {content_dir}"
                )
            try:
                drug_class = {**drug_class, "drugs": _drugs_of(value_set)}
            except ValueError as exc:
                raise CareGapConfigError(f"{where}: {exc}") from None
        resolved[class_id] = drug_class
    adherence = {**data["rules"]["medication-adherence"], "classes": resolved}
    return {**data, "rules": {**data["rules"], "medication-adherence": adherence}}


def parse_config(
    data: Any, origin: str = "care-gaps configuration", content_dir: Path | None = None
) -> CareGapConfig:
    """Check parsed JSON against the schema; every problem is named with its path. The
    ValueSets a drug class names are read from `content_dir` (profiles/content/ by default)."""
    data = _resolve_value_sets(data, content_dir or default_config_path().parent / "content")
    try:
        return CareGapConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_location(error['loc'])}: {error['msg']}" for error in exc.errors())
        raise CareGapConfigError(f"{origin}: {problems}") from None


@cache
def _load(path: Path) -> CareGapConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CareGapConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CareGapConfigError(
            f"{path}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    return parse_config(data, str(path), path.parent / "content")


def load_config(path: Path | str | None = None) -> CareGapConfig:
    """The configuration at `path` (a file, or a `profiles/` folder holding care-gaps.json;
    the checkout's profiles/care-gaps.json by default), read once."""
    where = Path(path) if path is not None else default_config_path()
    if where.is_dir():
        where = where / CONFIG_FILE
    return _load(where.resolve())
