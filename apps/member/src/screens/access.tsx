// Who looked at my record: the member's AuditEvents, each said as a sentence
// ("Dana Smith, your care manager, viewed your care plan on 3 October").
import { useState } from "preact/hooks";
import { type Api, humanName, type Resource } from "../fhir";
import { useLoad } from "../hooks";
import { dayMonth, type Messages, useI18n } from "../i18n";
import { Loading, Screen } from "../ui";
import { careTeam, roleLabel } from "./team";

type Seen = { event: Resource; who: string; role?: string; mine: boolean; type: string };

/** The resource type an event is about: the resource read or written, else the type searched. */
export function subjectType(event: Resource, member: string): string {
  for (const entity of event.entity ?? []) {
    const reference: string | undefined = entity.what?.reference;
    if (reference && reference !== member) return reference.split("/")[0];
  }
  for (const entity of event.entity ?? []) {
    if (!entity.query) continue;
    try {
      const path = atob(entity.query).split("?")[0];
      const type = path.split("/").find((part) => /^[A-Z][A-Za-z]+$/.test(part));
      if (type) return type;
    } catch {
      // not base64: say "your record"
    }
  }
  return "Patient";
}

async function accesses(api: Api): Promise<Seen[]> {
  const events = await api.search(
    `AuditEvent?patient=${api.patientId}&_sort=-date&_count=100`,
    3,
  );
  const team = await careTeam(api).catch(() => []);
  const roles = new Map(team.map((m) => [m.reference, m.role]));
  const names = new Map(team.filter((m) => m.name).map((m) => [m.reference, m.name]));
  const unknown = new Set<string>();
  for (const e of events) {
    const who: string | undefined = e.agent?.[0]?.who?.reference;
    if (who?.startsWith("Practitioner/") && !names.has(who)) unknown.add(who.split("/")[1]);
  }
  if (unknown.size) {
    const people = await api.search(`Practitioner?_id=${[...unknown].join(",")}`, 1).catch(() => []);
    for (const p of people) names.set(`Practitioner/${p.id}`, humanName(p));
  }
  return events
    // Sign-ins (DICOM 110114, "User Authentication") are not looks at the record.
    .filter((e) => e.type?.code !== "110114")
    .filter((e) => e.outcome === "0" || e.outcome === undefined)
    .map((event) => {
      const agent = event.agent?.[0]?.who ?? {};
      const reference: string | undefined = agent.reference;
      return {
        event,
        who: reference ? names.get(reference) ?? "" : "",
        role: reference ? roles.get(reference) : undefined,
        mine: reference === api.patientRef,
        type: subjectType(event, api.patientRef),
      };
    });
}

export function sentence(t: Messages, seen: Seen, when: string): string {
  const { event } = seen;
  const verb =
    event.action === "C" ? t.added : event.action === "U" ? t.changed : event.action === "D" ? t.deleted : t.viewed;
  const what = t.what[seen.type] ?? t.whatDefault;
  let who: string;
  if (seen.mine) who = t.you;
  else if (!event.agent?.[0]?.who?.reference) who = t.anApp;
  else who = `${seen.who || t.someone}, ${seen.role ? roleLabel(t, seen.role) : t.roleDefault},`;
  return `${who} ${verb} ${what} ${t.on} ${when}.`;
}

export function Access(props: { api: Api }) {
  const { t, lang } = useI18n();
  const state = useLoad(() => accesses(props.api));
  const [mine, setMine] = useState(false);
  return (
    <Screen title={t.navAccess} intro={t.accessIntro}>
      <p>
        <input
          type="checkbox"
          id="show-mine"
          checked={mine}
          onChange={(e) => setMine(e.currentTarget.checked)}
        />{" "}
        <label for="show-mine">{t.accessMine}</label>
      </p>
      <Loading state={state}>
        {(all) => {
          const shown = all.filter((s) => mine || !s.mine);
          return shown.length === 0 ? (
            <p>{t.accessNone}</p>
          ) : (
            <ul class="access">
              {shown.map((s) => (
                <li key={s.event.id}>
                  {sentence(t, s, dayMonth(s.event.recorded, lang))}
                </li>
              ))}
            </ul>
          );
        }}
      </Loading>
    </Screen>
  );
}
