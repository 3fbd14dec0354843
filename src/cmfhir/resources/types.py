"""The R4B resource type registry: every concrete resource type of FHIR 4.3.0
(https://hl7.org/fhir/R4B/resourcelist.html).

A literal, so answering "is this a resource type?" never imports the 150 fhir.resources
model modules; tests/resources/test_types.py checks it against fhir.resources.R4B.
The abstract `Resource` and `DomainResource` are not listed: no instance can have them as
its `resourceType`.
"""

from __future__ import annotations

__all__ = ["RESOURCE_TYPES", "is_resource_type"]

RESOURCE_TYPES: frozenset[str] = frozenset(
    """
    Account ActivityDefinition AdministrableProductDefinition AdverseEvent AllergyIntolerance
    Appointment AppointmentResponse AuditEvent Basic Binary BiologicallyDerivedProduct
    BodyStructure Bundle CapabilityStatement CarePlan CareTeam CatalogEntry ChargeItem
    ChargeItemDefinition Citation Claim ClaimResponse ClinicalImpression ClinicalUseDefinition
    CodeSystem Communication CommunicationRequest CompartmentDefinition Composition ConceptMap
    Condition Consent Contract Coverage CoverageEligibilityRequest CoverageEligibilityResponse
    DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement
    DiagnosticReport DocumentManifest DocumentReference Encounter Endpoint EnrollmentRequest
    EnrollmentResponse EpisodeOfCare EventDefinition Evidence EvidenceReport EvidenceVariable
    ExampleScenario ExplanationOfBenefit FamilyMemberHistory Flag Goal GraphDefinition Group
    GuidanceResponse HealthcareService ImagingStudy Immunization ImmunizationEvaluation
    ImmunizationRecommendation ImplementationGuide Ingredient InsurancePlan Invoice Library
    Linkage List Location ManufacturedItemDefinition Measure MeasureReport Media Medication
    MedicationAdministration MedicationDispense MedicationKnowledge MedicationRequest
    MedicationStatement MedicinalProductDefinition MessageDefinition MessageHeader
    MolecularSequence NamingSystem NutritionOrder NutritionProduct Observation
    ObservationDefinition OperationDefinition OperationOutcome Organization
    OrganizationAffiliation PackagedProductDefinition Parameters Patient PaymentNotice
    PaymentReconciliation Person PlanDefinition Practitioner PractitionerRole Procedure Provenance
    Questionnaire QuestionnaireResponse RegulatedAuthorization RelatedPerson RequestGroup
    ResearchDefinition ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment
    Schedule SearchParameter ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition
    StructureMap Subscription SubscriptionStatus SubscriptionTopic Substance SubstanceDefinition
    SupplyDelivery SupplyRequest Task TerminologyCapabilities TestReport TestScript ValueSet
    VerificationResult VisionPrescription
    """.split()  # noqa: SIM905 - a word list reads better than 141 quoted lines
)


def is_resource_type(name: str) -> bool:
    """True for a concrete R4B resource type name (case-sensitive, as in `resourceType`)."""
    return name in RESOURCE_TYPES
