// The six reports of /reports (docs/reports.md), each a section: what it counts in plain
// words, a chart where one helps (an SVG hidden from assistive technology beside a table of
// the same figures) and its table.
import { Fragment, type ComponentChildren } from "preact";
import { ruleName } from "../fhir/format";
import type { Json } from "../fhir/types";
import { Section } from "../ui";
import { BarChart, type Bar } from "./charts";

export interface Reports {
  caseload: Json;
  compliance: Json;
  timeliness: Json;
  gapsWhole: Json; // the gaps report over the whole period
  experience: Json;
  tcm: Json;
  gaps: Json[]; // the gaps report month by month
  managers: Map<string, string>; // Practitioner reference -> name
  period: string[];
}

const rows = (report: Json): Json[] => (report.rows ?? []) as Json[];

function manager(r: Reports, reference: unknown): string {
  if (!reference) return "No care manager";
  return r.managers.get(String(reference)) ?? String(reference);
}

const TIER: Record<string, string> = { high: "High", moderate: "Moderate", low: "Low" };
const tier = (code: unknown) => (code ? TIER[String(code)] ?? String(code) : "No tier recorded");

function percent(share: unknown): string {
  return typeof share === "number" ? `${Math.round(share * 100)}%` : "no members";
}

function days(figures: unknown): string {
  const f = (figures ?? {}) as Json;
  if (!f.count) return "none yet";
  return `${f.median} days (90% within ${f.p90} days; ${f.count} ${f.count === 1 ? "member" : "members"})`;
}

/** Figures as a list of terms and values. */
function Facts(props: { facts: [string, ComponentChildren][] }) {
  return (
    <dl class="facts">
      {props.facts.map(([term, value]) => (
        <Fragment key={term}>
          <dt>{term}</dt>
          <dd>{value}</dd>
        </Fragment>
      ))}
    </dl>
  );
}

/** A table with a caption and column headings; the first cell of each row is its heading. */
function Table(props: { caption: string; head: string[]; body: (string | number)[][] }) {
  return (
    <table>
      <caption>{props.caption}</caption>
      <thead>
        <tr>
          {props.head.map((h) => (
            <th scope="col" key={h}>
              {h}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {props.body.map((cells, i) => (
          <tr key={i}>
            <th scope="row">{cells[0]}</th>
            {cells.slice(1).map((c, j) => (
              <td key={j}>{c}</td>
            ))}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function Caseload(props: { r: Reports }) {
  const { r } = props;
  const s = (r.caseload.summary ?? {}) as Json;
  const members = rows(r.caseload).filter((row) => row.kind === "members");
  const excluded = rows(r.caseload).filter((row) => row.kind === "excluded");
  return (
    <Section title="Caseload">
      <Facts
        facts={[
          ["Members at the end of the period", String(s.members ?? 0)],
          ["New enrollments", String(s.new ?? 0)],
          ["Transferred in", String(s["transferred-in"] ?? 0)],
          ["Transferred out", String(s["transferred-out"] ?? 0)],
          ["Enrollments closed", String(s.closed ?? 0)],
          ["Excluded", String(s.excluded ?? 0)],
        ]}
      />
      {members.length ? (
        <Table
          caption="Members by care manager and acuity tier at the end of the period"
          head={["Care manager", "Acuity tier", "Members"]}
          body={members.map((row) => [manager(r, row.care_manager), tier(row.acuity_tier), Number(row.count ?? 0)])}
        />
      ) : null}
      {excluded.length ? (
        <Table
          caption="Exclusions by reason"
          head={["Reason", "Enrollments"]}
          body={excluded.map((row) => [String(row.reason ?? "Not given"), Number(row.count ?? 0)])}
        />
      ) : null}
    </Section>
  );
}

export function Compliance(props: { r: Reports }) {
  const { r } = props;
  const cells = new Map<string, { contacts: number; required: number }>();
  for (const row of rows(r.compliance)) {
    const key = `${row.care_manager ?? "none"}|${row.month}`;
    const cell = cells.get(key) ?? { contacts: 0, required: 0 };
    cell.contacts += Number(row.contacts ?? 0);
    cell.required += Number(row.required ?? 0);
    cells.set(key, cell);
  }
  const label = (key: string) => {
    const [m, month] = key.split("|");
    return `${manager(r, m === "none" ? "" : m)}, ${month}`;
  };
  const bars: Bar[] = [...cells.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([key, c]) => ({ label: label(key), value: c.contacts, target: c.required }));
  const summary = (r.compliance.summary ?? {}) as Json;
  return (
    <Section title="Contacts against the requirement">
      <p>
        {String(summary.members_compliant_every_month ?? 0)} of {String(summary.members ?? 0)} members had every month's contacts;{" "}
        {String(summary.contacts ?? 0)} qualifying contacts in all.
      </p>
      {bars.length ? <BarChart title="Qualifying contacts per care manager and month" bars={bars} unit="contacts" /> : <p>No enrolled members in this period.</p>}
      {bars.length ? (
        <Table caption="Contacts per care manager and month" head={["Care manager and month", "Contacts", "Required"]} body={bars.map((b) => [b.label, b.value, b.target ?? 0])} />
      ) : null}
    </Section>
  );
}

export function Timeliness(props: { r: Reports }) {
  const { r } = props;
  const s = (r.timeliness.summary ?? {}) as Json;
  const byManager = new Map<string, [number, number, number]>();
  for (const row of rows(r.timeliness)) {
    const key = String(row.care_manager ?? "");
    const [members, assessed, planned] = byManager.get(key) ?? [0, 0, 0];
    byManager.set(key, [members + 1, assessed + (row.current_assessment ? 1 : 0), planned + (row.current_care_plan ? 1 : 0)]);
  }
  return (
    <Section title="Assessments, care plans and follow-up">
      <Facts
        facts={[
          ["Members", String(s.members ?? 0)],
          ["With a current comprehensive assessment", percent(s.current_assessment_share)],
          ["With a current care plan", percent(s.current_care_plan_share)],
          ["From enrollment to the first assessment (median)", days(s.days_enrollment_to_assessment)],
          ["From the assessment to the first care plan (median)", days(s.days_assessment_to_care_plan)],
          ["Hospital discharges", String(s.discharges ?? 0)],
          ["Discharges with no follow-up contact yet", String(s.discharges_without_follow_up ?? 0)],
          ["From discharge to the follow-up contact (median)", days(s.days_discharge_to_follow_up)],
        ]}
      />
      {byManager.size ? (
        <Table
          caption="Current assessments and care plans per care manager"
          head={["Care manager", "Members", "Current assessment", "Current care plan"]}
          body={[...byManager.entries()].map(([m, [members, assessed, planned]]) => [manager(r, m), members, assessed, planned])}
        />
      ) : null}
    </Section>
  );
}

export function Gaps(props: { r: Reports }) {
  const { r } = props;
  const { period } = r;
  const rules = new Map<string, number[]>();
  r.gaps.forEach((report, i) => {
    for (const row of rows(report)) {
      const counts = rules.get(String(row.rule)) ?? period.map(() => 0);
      counts[i] += Number(row.count ?? 0);
      rules.set(String(row.rule), counts);
    }
  });
  const s = (r.gapsWhole.summary ?? {}) as Json;
  return (
    <Section title="Care gaps by kind over time">
      <Facts
        facts={[
          ["Gaps of the period still open", String(s["open-gap"] ?? 0)],
          ["Gaps of the period now coming up (prospective)", String(s["prospective-gap"] ?? 0)],
          ["Gaps of the period closed since", String(s["closed-gap"] ?? 0)],
        ]}
      />
      {rules.size === 0 ? (
        <p>No care gaps were open in this period.</p>
      ) : (
        <>
          <BarChart
            title={`Care gaps open at some time, ${period[0]} to ${period[period.length - 1]}`}
            bars={[...rules.entries()].map(([rule, counts]) => ({ label: ruleName(rule), value: counts.reduce((a, b) => a + b, 0) }))}
            unit="gaps"
          />
          <Table caption="Care gaps open at some time in each month, by kind" head={["Kind", ...period]} body={[...rules.entries()].map(([rule, counts]) => [ruleName(rule), ...counts])} />
        </>
      )}
    </Section>
  );
}

const ITEMS: Record<string, string> = { overall: "Overall rating (1 to 5)" };

export function Experience(props: { r: Reports }) {
  const { r } = props;
  const smallest = Number(((r.experience.summary ?? {}) as Json).smallest_group_shown ?? 5);
  const found = rows(r.experience);
  return (
    <Section title="Member experience">
      <p>
        What members answered in the contact satisfaction survey. A figure for fewer than {smallest} responses is not shown, so that no one can be picked out;
        what members wrote in their own words never appears here.
      </p>
      {found.length ? (
        <Table
          caption="Survey answers per care manager"
          head={["Care manager and question", "Responses", "Mean"]}
          body={found.map((row) => [
            `${manager(r, row.care_manager)}: ${ITEMS[String(row.item)] ?? String(row.item)}`,
            row.suppressed ? `fewer than ${smallest}` : Number(row.responses ?? 0),
            row.suppressed ? "not shown" : row.mean === null || row.mean === undefined ? "" : String(row.mean),
          ])}
        />
      ) : (
        <p>No survey answers in this period.</p>
      )}
    </Section>
  );
}

export function Tcm(props: { r: Reports; children: ComponentChildren }) {
  const { r } = props;
  const perManager = new Map<string, number>();
  for (const row of rows(r.tcm)) {
    const key = `${row.care_manager ?? ""}|${row.month}`;
    perManager.set(key, (perManager.get(key) ?? 0) + 1);
  }
  const s = (r.tcm.summary ?? {}) as Json;
  return (
    <Section title="Billable TCM encounters">
      <p>
        {String(s.billable_member_months ?? 0)} billable member-months in the period (a month with at least one qualifying contact).
      </p>
      {perManager.size ? (
        <Table
          caption="Billable member-months per care manager and month"
          head={["Care manager and month", "Member-months"]}
          body={[...perManager.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([key, count]) => {
            const [m, month] = key.split("|");
            return [`${manager(r, m)}, ${month}`, count];
          })}
        />
      ) : null}
      {props.children}
    </Section>
  );
}
