// Plain-language renderings of FHIR values. Everything here returns text: the screens put it
// in text nodes, never as HTML.
import {
  ACUITY_EXT,
  CARE_GAP_SYSTEM,
  CARE_MANAGER_EXT,
  ENGINE_MITIGATION,
  GAP_STATUS_URL,
  type CodeableConcept,
  type Json,
  type Resource,
} from "./types";

export function humanName(resource: Resource | undefined): string {
  if (!resource) return "Unknown";
  const names = (resource.name ?? []) as Json[];
  const name = names.find((n) => n.use === "usual") ?? names.find((n) => n.use === "official") ?? names[0];
  if (!name) return `${resource.resourceType} ${resource.id ?? ""}`.trim();
  if (name.text) return String(name.text);
  return [...(name.given ?? []), name.family].filter(Boolean).join(" ") || `${resource.resourceType} ${resource.id}`;
}

export function conceptText(concept: CodeableConcept | undefined): string {
  if (!concept) return "";
  return concept.text ?? concept.coding?.map((c) => c.display ?? c.code).filter(Boolean).join(", ") ?? "";
}

export function day(value: string | undefined): string {
  if (!value) return "";
  const date = new Date(value.length === 10 ? `${value}T12:00:00` : value);
  if (Number.isNaN(date.getTime())) return value;
  return date.toLocaleDateString("en-US", { day: "numeric", month: "short", year: "numeric" });
}

export function gapStatus(issue: Resource): string {
  for (const ext of (issue.modifierExtension ?? []) as Json[]) {
    if (ext.url === GAP_STATUS_URL) return String(ext.valueCodeableConcept?.coding?.[0]?.code ?? "");
  }
  return "";
}

export function gapRule(issue: Resource): string {
  const coding = ((issue.code?.coding ?? []) as Json[]).find((c) => c.system === CARE_GAP_SYSTEM);
  return String(coding?.code ?? "");
}

export const RULE_NAMES: Record<string, string> = {
  "transition-follow-up": "Follow-up after a hospital or ED discharge",
  "bh-follow-up": "Mental health follow-up after a stay",
  "new-specialist": "New specialist visit",
  "new-medication": "New medication to reconcile",
  "missed-appointment": "Missed appointment",
  "assessment-overdue": "Comprehensive assessment due",
  "care-plan-overdue": "Care plan due",
  "medication-adherence": "Medicines not picked up on time",
  "contact-requirement": "Contacts needed this period",
  "no-care-manager": "No care manager assigned",
  "sdoh-referral": "Referral for a health-related need",
};

export function ruleName(rule: string): string {
  return RULE_NAMES[rule] ?? (rule || "Care gap");
}

export function careManagerOf(issue: Resource): string | undefined {
  const ext = ((issue.extension ?? []) as Json[]).find((e) => e.url === CARE_MANAGER_EXT);
  return ext?.valueReference?.reference;
}

export function acuityTier(episode: Resource | undefined): string {
  const ext = ((episode?.extension ?? []) as Json[]).find((e) => e.url === ACUITY_EXT);
  return ext?.valueCode ? String(ext.valueCode) : "";
}

export function acknowledged(issue: Resource): boolean {
  return ((issue.mitigation ?? []) as Json[]).some(
    (m) => !((m.action?.coding ?? []) as Json[]).some((c) => c.system === ENGINE_MITIGATION),
  );
}

export function ref(resource: Resource): string {
  return `${resource.resourceType}/${resource.id}`;
}

export function todayIso(): string {
  const now = new Date();
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
}
