"""Vocabulary for the synthetic caseload: names, North Carolina places, and the codes
(LOINC, SNOMED CT, RxNorm, HL7 terminology) the generated resources carry."""

from __future__ import annotations

from typing import Final

LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
RXNORM: Final = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM: Final = "http://unitsofmeasure.org"
V3_ACT: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBS_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VER: Final = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/condition-category"
DISCHARGE: Final = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
NPI: Final = "http://hl7.org/fhir/sid/us-npi"

# Local code systems of the fictional care-management agency.
LOCAL: Final = "https://bench.cmfhir.example"
MEMBER_ID: Final = f"{LOCAL}/member-id"
MEDICAID_ID: Final = f"{LOCAL}/nc-medicaid-id"
ACUITY: Final = f"{LOCAL}/CodeSystem/acuity-tier"
# The enrollment and contact model of docs/care-management.md.
PROGRAM: Final = "https://cmfhir.org/fhir/CodeSystem/program"
ACUITY_TIER_EXT: Final = "https://cmfhir.org/fhir/StructureDefinition/acuity-tier"
PARTICIPATION_MODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
TEAM_ROLE: Final = f"{LOCAL}/CodeSystem/care-team-role"
CONTACT_KIND: Final = f"{LOCAL}/CodeSystem/contact-kind"
GENDER_IDENTITY_EXT: Final = "http://hl7.org/fhir/StructureDefinition/patient-genderIdentity"
GENDER_IDENTITY_CS: Final = "http://terminology.hl7.org/CodeSystem/gender-identity"

# fmt: off
GIVEN_FEMALE: Final = (
    "Ada", "Imani", "Maria", "Linh", "Keisha", "Hannah", "Guadalupe", "Aisha", "Ruth",
    "Tamika", "Sofia", "Mei", "Brenda", "Latoya", "Emma", "Priya", "Yesenia", "Dorothy",
)
GIVEN_MALE: Final = (
    "James", "DeShawn", "Jose", "Minh", "Robert", "Tyrone", "Luis", "Ahmed", "William",
    "Marcus", "Carlos", "Wei", "Earl", "Jamal", "Noah", "Ravi", "Juan", "Harold",
)
GIVEN_NEUTRAL: Final = ("Jordan", "Alex", "Riley", "Casey", "Avery", "Quinn", "Sam", "Rowan")
FAMILY: Final = (
    "Okafor", "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Nguyen", "Tran", "Locklear", "Oxendine",
    "Jacobs", "McMillan", "Barnes", "Pope", "Faircloth", "Chavis", "Hunt", "Patel", "Shah",
    "Kim", "Lee", "Washington", "Jefferson", "Greene", "Harris", "Robinson", "Walker", "Young",
    "Allen", "King", "Wright", "Scott", "Torres", "Hill", "Adams", "Baker", "Nelson", "Carter",
    "Mitchell", "Perez", "Roberts", "Turner", "Phillips", "Campbell", "Parker", "Evans",
    "Edwards", "Collins", "Stewart", "Sanchez", "Morris", "Rogers", "Reed", "Cook", "Morgan",
    "Bell", "Murphy", "Bailey", "Rivera", "Cooper", "Richardson", "Cox", "Howard", "Ward",
)
STREETS: Final = (
    "Main St", "Oak Ave", "Church St", "Hillsborough St", "Tryon St", "Elm St", "Pine Dr",
    "Cedar Ln", "Martin Luther King Jr Blvd", "Fayetteville St", "Market St", "Poplar Ave",
)
# fmt: on
# (city, county, ZIP)
NC_PLACES: Final = (
    ("Raleigh", "Wake", "27601"),
    ("Durham", "Durham", "27701"),
    ("Charlotte", "Mecklenburg", "28202"),
    ("Greensboro", "Guilford", "27401"),
    ("Fayetteville", "Cumberland", "28301"),
    ("Asheville", "Buncombe", "28801"),
    ("Wilmington", "New Hanover", "28401"),
    ("Rocky Mount", "Nash", "27801"),
    ("Greenville", "Pitt", "27834"),
    ("Boone", "Watauga", "28607"),
    ("Lumberton", "Robeson", "28358"),
    ("Goldsboro", "Wayne", "27530"),
)

# (code, display) of chronic conditions common in care-management caseloads.
CONDITIONS: Final = (
    ("44054006", "Diabetes mellitus type 2"),
    ("38341003", "Hypertensive disorder"),
    ("35489007", "Depressive disorder"),
    ("195967001", "Asthma"),
    ("13645005", "Chronic obstructive lung disease"),
    ("42343007", "Congestive heart failure"),
    ("709044004", "Chronic kidney disease"),
    ("197480006", "Anxiety disorder"),
    ("66590003", "Alcohol dependence"),
    ("162864005", "Body mass index 30+ - obesity"),
)
# (code, display, medication for condition index)
MEDICATIONS: Final = (
    ("860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet"),
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("197361", "amlodipine 5 MG Oral Tablet"),
    ("312940", "sertraline 50 MG Oral Tablet"),
    ("617312", "atorvastatin 40 MG Oral Tablet"),
    ("745679", "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"),
    ("200031", "carvedilol 6.25 MG Oral Tablet"),
    ("310798", "hydrochlorothiazide 25 MG Oral Tablet"),
)
# (LOINC code, display, unit, UCUM code, low, high, decimals)
VITALS: Final = (
    ("29463-7", "Body weight", "kg", "kg", 48.0, 150.0, 1),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", "kg/m2", 18.0, 48.0, 1),
    ("8867-4", "Heart rate", "/min", "/min", 52.0, 110.0, 0),
)
LABS: Final = (
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", "%", 5.0, 12.5, 1),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 120.0, 290.0, 0),
    (
        "33914-3",
        "Glomerular filtration rate/1.73 sq M.predicted",
        "mL/min/{1.73_m2}",
        "mL/min/{1.73_m2}",
        25.0,
        110.0,
        0,
    ),
)
SURVEYS: Final = (
    ("44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]", 0, 27),
    ("70274-6", "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]", 0, 21),
)
ENCOUNTER_TYPES: Final = {
    "AMB": ("ambulatory", "185349003", "Encounter for check up"),
    "EMER": ("emergency", "50849002", "Emergency room admission"),
    "IMP": ("inpatient encounter", "32485007", "Hospital admission"),
}
DISCHARGE_CODES: Final = (
    ("home", "Home"),
    ("hosp", "Hospice"),
    ("snf", "Skilled nursing facility"),
)
ACUITY_TIERS: Final = (
    ("high", "High acuity"),
    ("moderate", "Moderate acuity"),
    ("low", "Low acuity"),
)
GENDER_IDENTITIES: Final = (
    ("non-binary", "Non-binary"),
    ("transgender-female", "Transgender female"),
    ("transgender-male", "Transgender male"),
    ("non-disclose", "Does not wish to disclose"),
)
TEAM_ROLES: Final = {
    "care-manager": "Care manager",
    "chw": "Community health worker",
    "peer-support": "Peer support specialist",
    "pcp": "Primary care provider",
}
GOALS: Final = (
    ("Hemoglobin A1c below 8 percent", "4548-4", 8.0, "%"),
    ("Systolic blood pressure below 140 mm Hg", "8480-6", 140.0, "mm[Hg]"),
    ("PHQ-9 score below 10", "44261-6", 10.0, "{score}"),
)
CONTACT_KINDS: Final = (
    ("outreach-call", "Outreach call", "PHONE"),
    ("home-visit", "Home visit", "FACE"),
    ("text-reminder", "Text reminder", "WRITTEN"),
    ("transition-call", "Transition-of-care call", "PHONE"),
)
