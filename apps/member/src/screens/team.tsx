import { type Api, humanName, type Resource } from "../fhir";
import { useLoad } from "../hooks";
import { useI18n } from "../i18n";
import { Loading, Screen } from "../ui";

export type Member = { reference: string; name: string; role?: string; telecom: any[] };

/** The people of the member's active care teams, with their role codes and how to reach them. */
export async function careTeam(api: Api): Promise<Member[]> {
  const found = await api.search(
    `CareTeam?patient=${api.patientId}&status=active&_include=CareTeam:participant`,
  );
  const people = new Map<string, Resource>();
  for (const r of found) if (r.resourceType !== "CareTeam") people.set(`${r.resourceType}/${r.id}`, r);
  const members: Member[] = [];
  for (const team of found.filter((r) => r.resourceType === "CareTeam")) {
    for (const participant of team.participant ?? []) {
      const reference: string | undefined = participant.member?.reference;
      if (!reference || reference === api.patientRef) continue;
      const person = people.get(reference);
      const coding = (participant.role ?? []).flatMap((c: any) => c.coding ?? [])[0];
      members.push({
        reference,
        name: humanName(person) || participant.member?.display || "",
        role: coding?.code,
        telecom: person?.telecom ?? [],
      });
    }
  }
  return members;
}

export function roleLabel(t: ReturnType<typeof useI18n>["t"], code: string | undefined): string {
  return (code && t.roles[code]) || t.roleDefault;
}

export function Team(props: { api: Api }) {
  const { t } = useI18n();
  const state = useLoad(() => careTeam(props.api));
  return (
    <Screen title={t.navTeam} intro={t.teamIntro}>
      <Loading state={state}>
        {(members) =>
          members.length === 0 ? (
            <p>{t.teamNone}</p>
          ) : (
            <ul class="cards">
              {members.map((m) => (
                <li key={m.reference + (m.role ?? "")} class="card">
                  <h2>{m.name || t.someone}</h2>
                  <p class="role">{roleLabel(t, m.role)}</p>
                  <Reach telecom={m.telecom} />
                </li>
              ))}
            </ul>
          )
        }
      </Loading>
    </Screen>
  );
}

function Reach(props: { telecom: any[] }) {
  const { t } = useI18n();
  const usable = props.telecom.filter((c) => c?.value && (c.system === "phone" || c.system === "email"));
  if (!usable.length) return <p>{t.noContact}</p>;
  return (
    <ul class="reach">
      {usable.map((c) => (
        <li key={c.system + c.value}>
          {c.system === "phone" ? t.phone : t.email}:{" "}
          <a href={c.system === "phone" ? `tel:${String(c.value).replace(/[^\d+]/g, "")}` : `mailto:${c.value}`}>
            {String(c.value)}
          </a>
        </li>
      ))}
    </ul>
  );
}
