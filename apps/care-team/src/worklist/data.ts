// The worklist's data: open and prospective care gaps the user may see (the server narrows
// them to their members), with each member and their enrollment's acuity tier.
import type { Api } from "../fhir/client";
import { acknowledged, acuityTier, gapStatus, ref } from "../fhir/format";
import { GAP_STATUS_SYSTEM, GAP_STATUS_URL, type Json, type Resource } from "../fhir/types";

export interface Row {
  issue: Resource;
  patient?: Resource;
  tier: string;
}

export async function loadWorklist(api: Api, mine: boolean): Promise<Row[]> {
  let query = "DetectedIssue?gap-status=open-gap,prospective-gap&_include=DetectedIssue:patient&_count=200";
  if (mine && api.user?.startsWith("Practitioner/")) query += `&care-manager=${api.user}`;
  const [found, episodes] = await Promise.all([
    api.search(query, 2000),
    api.search("EpisodeOfCare?status=active&_count=500", 5000),
  ]);
  const patients = new Map<string, Resource>();
  for (const r of found) if (r.resourceType === "Patient") patients.set(ref(r), r);
  const tiers = new Map<string, string>();
  for (const e of episodes) {
    const who = String(e.patient?.reference ?? "");
    const tier = acuityTier(e);
    if (who && tier) tiers.set(who, tier);
  }
  const rows = found
    .filter((r) => r.resourceType === "DetectedIssue" && !acknowledged(r))
    .map((issue) => {
      const who = String(issue.patient?.reference ?? "");
      return { issue, patient: patients.get(who), tier: tiers.get(who) ?? "" };
    });
  // Most overdue first: an open gap's date is when it began, a prospective one's when it is due.
  rows.sort((a, b) => {
    const open = Number(gapStatus(b.issue) === "open-gap") - Number(gapStatus(a.issue) === "open-gap");
    if (open) return open;
    return String(a.issue.identifiedDateTime ?? "").localeCompare(String(b.issue.identifiedDateTime ?? ""));
  });
  return rows;
}

/** Acknowledge a gap: a mitigation by the user with their note, and the gap closed
 *  (docs/care-gaps.md: a person's mitigation keeps the gap closed). */
export async function acknowledge(api: Api, issue: Resource, note: string): Promise<Resource> {
  const latest = await api.read(`DetectedIssue/${issue.id}`);
  const mitigation: Json = {
    action: { text: note.trim() ? `Acknowledged: ${note.trim()}` : "Acknowledged by the care team" },
    date: new Date().toISOString(),
  };
  if (api.user) mitigation.author = { reference: api.user };
  const others = ((latest.modifierExtension ?? []) as Json[]).filter((e) => e.url !== GAP_STATUS_URL);
  const updated: Resource = {
    ...latest,
    modifierExtension: [
      {
        url: GAP_STATUS_URL,
        valueCodeableConcept: { coding: [{ system: GAP_STATUS_SYSTEM, code: "closed-gap", display: "Closed Gap" }] },
      },
      ...others,
    ],
    mitigation: [...((latest.mitigation ?? []) as Json[]), mitigation],
  };
  return api.update(updated);
}
