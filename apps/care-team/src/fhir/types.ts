// Loose FHIR R4 shapes: only the elements the console reads, checked where it reads them.

export type Json = Record<string, any>;

export interface Resource extends Json {
  resourceType: string;
  id?: string;
  meta?: { versionId?: string; lastUpdated?: string };
}

export interface Coding {
  system?: string;
  code?: string;
  display?: string;
}

export interface CodeableConcept {
  coding?: Coding[];
  text?: string;
}

export interface Reference {
  reference?: string;
  display?: string;
}

export interface Bundle extends Resource {
  entry?: { resource?: Resource; search?: { mode?: string } }[];
  link?: { relation: string; url: string }[];
  total?: number;
}

export const CMFHIR = "https://cmfhir.org/fhir";
export const CARE_GAP_SYSTEM = `${CMFHIR}/CodeSystem/care-gap`;
export const CARE_MANAGER_EXT = `${CMFHIR}/StructureDefinition/care-manager`;
export const ACUITY_EXT = `${CMFHIR}/StructureDefinition/acuity-tier`;
export const GAP_STATUS_URL =
  "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-gapStatus";
export const GAP_STATUS_SYSTEM = "http://hl7.org/fhir/us/davinci-deqm/CodeSystem/gaps-status";
export const ENGINE_MITIGATION = `${CMFHIR}/CodeSystem/care-gap-mitigation`;
export const PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode";
export const PRONOUNS_EXT = "http://hl7.org/fhir/StructureDefinition/individual-pronouns";
export const QUESTIONNAIRE = {
  assessment: `${CMFHIR}/Questionnaire/comprehensive-assessment`,
  engagement: `${CMFHIR}/Questionnaire/engagement-sheet`,
  satisfaction: `${CMFHIR}/Questionnaire/contact-satisfaction`,
};
