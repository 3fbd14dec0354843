// Everything the member page shows, read in parallel: the server returns only what the user
// may see of this member.
import type { Api } from "../fhir/client";
import { gapRule, gapStatus } from "../fhir/format";
import { QUESTIONNAIRE, type Json, type Resource } from "../fhir/types";

export interface Member {
  patient: Resource;
  responses: Resource[];
  goals: Resource[];
  careTeams: Resource[];
  people: Map<string, Resource>;
  encounters: Resource[];
  medications: Resource[];
  newMedications: Set<string>;
  carePlans: Resource[];
  contacts: Resource[];
  episodes: Resource[];
  gaps: Resource[];
}

const canonical = (r: Resource) => String(r.questionnaire ?? "").split("|")[0];

export async function loadMember(api: Api, id: string): Promise<Member> {
  const p = `patient=Patient/${encodeURIComponent(id)}`;
  const [patient, responses, goals, teams, encounters, requests, statements, carePlans, contacts, episodes, gaps] =
    await Promise.all([
      api.read(`Patient/${encodeURIComponent(id)}`),
      api.search(`QuestionnaireResponse?${p}&_sort=-authored&_count=50`, 50),
      api.search(`Goal?${p}&_count=100`, 200),
      api.search(`CareTeam?${p}&status=active&_include=CareTeam:participant&_count=50`, 200),
      api.search(`Encounter?${p}&_sort=-date&_count=50`, 50),
      api.search(`MedicationRequest?${p}&_count=100`, 200),
      api.search(`MedicationStatement?${p}&_count=100`, 200),
      api.search(`CarePlan?${p}&_count=50`, 100),
      api.search(`Communication?${p}&_sort=-sent&_count=50`, 50),
      api.search(`EpisodeOfCare?${p}&_count=20`, 20),
      api.search(`DetectedIssue?${p}&gap-status=open-gap,prospective-gap&_count=100`, 200),
    ]);
  const people = new Map<string, Resource>();
  const careTeams: Resource[] = [];
  for (const r of teams) {
    if (r.resourceType === "CareTeam") careTeams.push(r);
    else people.set(`${r.resourceType}/${r.id}`, r);
  }
  const newMedications = new Set<string>();
  for (const gap of gaps) {
    if (gapRule(gap) !== "new-medication" || gapStatus(gap) === "closed-gap") continue;
    for (const e of (gap.evidence ?? []) as Json[])
      for (const d of (e.detail ?? []) as Json[]) if (d.reference) newMedications.add(String(d.reference));
  }
  return {
    patient,
    responses,
    goals,
    careTeams,
    people,
    encounters,
    medications: [...requests, ...statements],
    newMedications,
    carePlans,
    contacts,
    episodes,
    gaps,
  };
}

export function latest(member: Member, url: string): Resource | undefined {
  return member.responses.find((r) => canonical(r) === url && (r.status === "completed" || r.status === "amended"));
}

export function assessments(member: Member): Resource[] {
  return member.responses.filter((r) => canonical(r) === QUESTIONNAIRE.assessment);
}

/** The answers of a response item (first found by linkId, at any depth), as text. */
export function answerText(response: Resource | undefined, linkId: string): string[] {
  if (!response) return [];
  const out: string[] = [];
  const walk = (items: Json[]) => {
    for (const item of items) {
      if (item.linkId === linkId)
        for (const a of (item.answer ?? []) as Json[]) {
          if (a.valueCoding) out.push(String(a.valueCoding.display ?? a.valueCoding.code));
          else if (a.valueBoolean !== undefined) out.push(a.valueBoolean ? "Yes" : "No");
          else {
            const key = Object.keys(a).find((k) => k.startsWith("value"));
            if (key) out.push(String(a[key]));
          }
        }
      walk((item.item ?? []) as Json[]);
    }
  };
  walk((response.item ?? []) as Json[]);
  return out;
}
