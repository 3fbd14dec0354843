// The member page: who the member is in their own words, their care team, what happened to
// them (encounters, medications), their assessments, care plans and goals with due dates,
// and their contacts; with the work a care manager does from here.
import { useState } from "preact/hooks";
import type { Api } from "../fhir/client";
import { conceptText, day, gapRule, humanName, ref, ruleName } from "../fhir/format";
import { PRONOUNS_EXT, QUESTIONNAIRE, type Json } from "../fhir/types";
import { Done, Loading, Problem, Screen, Section, useLoad } from "../ui";
import { CarePlanEditor, GoalEditor } from "./plan";
import { ContactForm } from "./contact";
import { answerText, assessments, latest, loadMember, type Member } from "./data";

const HOSPITAL = new Set(["IMP", "EMER", "ACUTE", "OBSENC"]);

function takeFlash(): string | undefined {
  const text = sessionStorage.getItem("cmfhir-care-team-flash") ?? undefined;
  sessionStorage.removeItem("cmfhir-care-team-flash");
  return text;
}

export function MemberPage(props: { api: Api; patientId: string }) {
  const { api, patientId } = props;
  const member = useLoad(() => loadMember(api, patientId), [patientId]);
  const [flash] = useState(takeFlash);
  const name = member.data ? humanName(member.data.patient) : "Member";
  return (
    <Screen title={name}>
      {flash ? <Done text={flash} /> : null}
      <Problem text={member.error} />
      {member.loading && !member.data ? <Loading what="the member's record" /> : null}
      {member.data ? <Record api={api} m={member.data} reload={member.reload} /> : null}
    </Screen>
  );
}

function Record(props: { api: Api; m: Member; reload: () => void }) {
  const { api, m, reload } = props;
  const id = encodeURIComponent(String(m.patient.id));
  return (
    <div class="member">
      <nav aria-label="Work for this member" class="actions">
        <a class="button" href={`#/member/${id}/form/assessment`}>
          Fill the comprehensive assessment
        </a>
        <a class="button" href={`#/member/${id}/form/engagement`}>
          Fill the engagement sheet
        </a>
      </nav>
      <InTheirWords m={m} />
      <Due m={m} />
      <Section title="Care team">
        <CareTeam m={m} />
      </Section>
      <Section title="Goals">
        <GoalEditor api={api} m={m} reload={reload} />
      </Section>
      <Section title="Care plan">
        <CarePlanEditor api={api} m={m} reload={reload} />
      </Section>
      <Section title="Contacts">
        <ContactForm api={api} m={m} reload={reload} />
        <Contacts m={m} />
      </Section>
      <Section title="Encounters">
        <Encounters m={m} />
      </Section>
      <Section title="Medications">
        <Medications m={m} />
      </Section>
      <Section title="Assessments">
        <Assessments m={m} />
      </Section>
    </div>
  );
}

function Pair(props: { term: string; values: string[] }) {
  if (props.values.length === 0) return null;
  return (
    <>
      <dt>{props.term}</dt>
      <dd>{props.values.join(", ")}</dd>
    </>
  );
}

function InTheirWords(props: { m: Member }) {
  const { m } = props;
  const sheet = latest(m, QUESTIONNAIRE.engagement);
  const a = (linkId: string) => answerText(sheet, linkId);
  const pronounExt = ((m.patient.extension ?? []) as Json[]).find((e) => e.url === PRONOUNS_EXT);
  const recorded = ((pronounExt?.extension ?? []) as Json[])
    .filter((e) => e.url === "value")
    .map((e) => conceptText(e.valueCodeableConcept));
  const telecom = ((m.patient.telecom ?? []) as Json[]).map((t) => `${t.system ?? "contact"}: ${t.value ?? ""}${t.use ? ` (${t.use})` : ""}`);
  return (
    <Section title="In their own words">
      {sheet ? <p class="muted">From the engagement sheet of {day(sheet.authored)}.</p> : <p class="muted">No engagement sheet yet.</p>}
      <dl class="facts">
        <Pair term="Name to use" values={a("name-to-use")} />
        <Pair term="Pronouns" values={a("pronouns").length ? a("pronouns") : recorded} />
        <Pair term="Gender identity" values={a("gender-identity")} />
        <Pair term="What matters most" values={a("what-matters-most")} />
        <Pair term="Success looks like" values={a("success")} />
        <Pair term="Strengths" values={a("strengths")} />
        <Pair term="How to reach them" values={a("contact-method")} />
        <Pair term="Best times" values={a("best-times")} />
        <Pair term="OK to leave a message" values={a("leave-message")} />
        <Pair term="Phone and email on record" values={telecom} />
        <Pair term="Born" values={m.patient.birthDate ? [day(String(m.patient.birthDate))] : []} />
      </dl>
    </Section>
  );
}

function Due(props: { m: Member }) {
  const gaps = props.m.gaps;
  return (
    <Section title="Open care gaps and due dates">
      {gaps.length === 0 ? (
        <p>Nothing is due.</p>
      ) : (
        <ul>
          {gaps.map((g) => (
            <li key={g.id}>
              <strong>{ruleName(gapRule(g))}</strong> — {String(g.detail ?? "")}
            </li>
          ))}
        </ul>
      )}
    </Section>
  );
}

function CareTeam(props: { m: Member }) {
  const { m } = props;
  const rows: [string, string, string][] = [];
  for (const team of m.careTeams)
    for (const p of (team.participant ?? []) as Json[]) {
      const who = String(p.member?.reference ?? "");
      const person = m.people.get(who);
      const roles = ((p.role ?? []) as Json[]).map(conceptText).filter(Boolean).join(", ");
      const reach = ((person?.telecom ?? []) as Json[]).map((t) => String(t.value ?? "")).filter(Boolean).join(", ");
      rows.push([person ? humanName(person) : p.member?.display ?? who, roles || "Team member", reach]);
    }
  for (const e of m.episodes)
    if (e.careManager?.reference && !rows.length) rows.push([String(e.careManager.display ?? e.careManager.reference), "Care manager", ""]);
  if (rows.length === 0) return <p>No care team recorded.</p>;
  return (
    <table>
      <caption class="visually-hidden">Care team</caption>
      <thead>
        <tr>
          <th scope="col">Who</th>
          <th scope="col">Role</th>
          <th scope="col">How to reach</th>
        </tr>
      </thead>
      <tbody>
        {rows.map(([who, role, reach], i) => (
          <tr key={i}>
            <td>{who}</td>
            <td>{role}</td>
            <td>{reach}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Encounters(props: { m: Member }) {
  const list = props.m.encounters;
  if (list.length === 0) return <p>No encounters recorded.</p>;
  return (
    <ol class="timeline">
      {list.map((e) => {
        const cls = String(e.class?.code ?? "");
        const hospital = HOSPITAL.has(cls);
        const event = hospital ? (e.status === "in-progress" ? "Admitted" : e.status === "finished" ? "Discharged" : "Hospital") : "";
        const when = e.status === "finished" && e.period?.end ? e.period.end : e.period?.start;
        return (
          <li key={e.id} class={hospital ? "highlight" : undefined}>
            <span class="when">{day(when)}</span> {event ? <span class="badge open-gap">{event}</span> : null}{" "}
            {conceptText(e.type?.[0]) || e.class?.display || cls || "Visit"}
            {e.serviceProvider?.display ? ` at ${e.serviceProvider.display}` : ""}
          </li>
        );
      })}
    </ol>
  );
}

function Medications(props: { m: Member }) {
  const { m } = props;
  if (m.medications.length === 0) return <p>No medications recorded.</p>;
  return (
    <ul>
      {m.medications.map((r) => (
        <li key={ref(r)}>
          {conceptText(r.medicationCodeableConcept) || r.medicationReference?.display || "Medication"}
          {m.newMedications.has(ref(r)) ? <span class="badge prospective-gap"> New</span> : null}
          <span class="muted"> · {String(r.status ?? "")} {day(r.authoredOn ?? r.dateAsserted ?? r.effectiveDateTime)}</span>
        </li>
      ))}
    </ul>
  );
}

function Assessments(props: { m: Member }) {
  const done = assessments(props.m);
  if (done.length === 0) return <p>No comprehensive assessment yet.</p>;
  return (
    <ul>
      {done.map((r) => (
        <li key={r.id}>
          Comprehensive assessment, {day(r.authored)} ({String(r.status)})
        </li>
      ))}
    </ul>
  );
}

function Contacts(props: { m: Member }) {
  const list = props.m.contacts;
  if (list.length === 0) return <p>No contacts logged yet.</p>;
  return (
    <ul class="contacts">
      {list.map((c) => (
        <li key={c.id}>
          <span class="when">{day(c.sent)}</span> {conceptText(c.medium?.[0]) || "Contact"}
          {c.status === "not-done" ? " (did not reach them)" : ""}
          {((c.payload ?? []) as Json[]).map((p, i) => (
            <span key={i} class="note"> — {String(p.contentString ?? "")}</span>
          ))}
        </li>
      ))}
    </ul>
  );
}
