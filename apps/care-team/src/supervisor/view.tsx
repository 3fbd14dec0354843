// The supervisor view: every report of /reports a supervisor or care manager may run, for my
// organization and a period I choose (JSON), drawn as charts and tables, and the billable TCM
// encounters as a CSV download. The server narrows each report to what my token may see.
import { useState } from "preact/hooks";
import type { Api } from "../fhir/client";
import { FhirError } from "../fhir/client";
import { humanName } from "../fhir/format";
import type { Json, Resource } from "../fhir/types";
import { Loading, Problem, Screen, useLoad } from "../ui";
import { Caseload, Compliance, Experience, Gaps, Tcm, Timeliness, type Reports } from "./reports";

/** The last `count` months, oldest first, as YYYY-MM. */
export function lastMonths(count: number): string[] {
  const now = new Date();
  const out: string[] = [];
  for (let i = count - 1; i >= 0; i--) {
    const d = new Date(now.getFullYear(), now.getMonth() - i, 1);
    out.push(`${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}`);
  }
  return out;
}

/** Every month from `first` to `last` (YYYY-MM), in order. */
function monthsBetween(first: string, last: string): string[] {
  const out: string[] = [];
  let [y, m] = first.split("-").map(Number);
  const [ly, lm] = last.split("-").map(Number);
  while (y < ly || (y === ly && m <= lm)) {
    out.push(`${y}-${String(m).padStart(2, "0")}`);
    m += 1;
    if (m > 12) {
      m = 1;
      y += 1;
    }
  }
  return out;
}

function monthName(month: string): string {
  const [y, m] = month.split("-").map(Number);
  return new Date(y, m - 1, 1).toLocaleDateString("en-US", { month: "long", year: "numeric" });
}

// The months one may choose from (two years back), and the period shown at first.
const CHOICES = lastMonths(24);
const DEFAULT_MONTHS = 6;

interface Org {
  id: string;
  name: string;
}

async function organizations(api: Api): Promise<Org[]> {
  if (!api.user?.startsWith("Practitioner/")) return [];
  const found = await api.search(`PractitionerRole?practitioner=${api.user}&_include=PractitionerRole:organization`, 50);
  const orgs = new Map<string, Org>();
  for (const r of found) if (r.resourceType === "Organization") orgs.set(String(r.id), { id: String(r.id), name: String(r.name ?? r.id) });
  for (const r of found) {
    const id = String(r.organization?.reference ?? "").split("/")[1];
    if (r.resourceType === "PractitionerRole" && id && !orgs.has(id)) orgs.set(id, { id, name: id });
  }
  return [...orgs.values()];
}

async function loadReports(api: Api, org: string, period: string[]): Promise<Reports> {
  const scope = `organization=${encodeURIComponent(org)}`;
  const whole = `${period[0]}..${period[period.length - 1]}`;
  // Every row (`_count=all`): the charts below add up the member-month rows per care manager.
  const get = (name: string, months: string) => api.json<Json>("GET", `/reports/${name}?${scope}&period=${months}&_count=all`);
  const [caseload, compliance, timeliness, gapsWhole, experience, tcm, ...gaps] = await Promise.all([
    get("caseload", whole),
    get("contact-compliance", whole),
    get("timeliness", whole),
    get("gaps", whole),
    get("member-experience", whole),
    get("tcm-encounters", whole),
    ...period.map((m) => get("gaps", m)),
  ]);
  const refs = new Set<string>();
  for (const report of [caseload, compliance, timeliness, gapsWhole, experience, tcm]) {
    for (const r of (report.rows ?? []) as Json[]) if (r.care_manager) refs.add(String(r.care_manager));
  }
  const managers = new Map<string, string>();
  await Promise.all(
    [...refs].map(async (m) => {
      const reference = m.includes("/") ? m : `Practitioner/${m}`;
      const who = await api.read<Resource>(reference).catch(() => undefined);
      managers.set(m, who ? humanName(who) : m);
    }),
  );
  return { caseload, compliance, timeliness, gapsWhole, experience, tcm, gaps, managers, period };
}

export function Supervisor(props: { api: Api }) {
  const { api } = props;
  const orgs = useLoad(() => organizations(api), []);
  const [chosen, setChosen] = useState("");
  const org = chosen || orgs.data?.[0]?.id || "";
  return (
    <Screen title="Supervisor view">
      <Problem text={orgs.error} />
      {orgs.loading && !orgs.data ? <Loading what="your organizations" /> : null}
      {orgs.data && orgs.data.length === 0 ? (
        <p>Your account holds no role at an organization, so there is nothing to report on.</p>
      ) : null}
      {orgs.data && orgs.data.length > 1 ? (
        <div class="field">
          <label for="org">Organization</label>
          <select id="org" value={org} onChange={(e) => setChosen(e.currentTarget.value)}>
            {orgs.data.map((o) => (
              <option key={o.id} value={o.id}>
                {o.name}
              </option>
            ))}
          </select>
        </div>
      ) : null}
      {org ? <OrgReports api={api} org={org} name={orgs.data?.find((o) => o.id === org)?.name ?? org} /> : null}
    </Screen>
  );
}

function OrgReports(props: { api: Api; org: string; name: string }) {
  const { api, org } = props;
  const [period, setPeriod] = useState(() => CHOICES.slice(-DEFAULT_MONTHS));
  const reports = useLoad(() => loadReports(api, org, period), [org, period.join()]);
  const first = period[0];
  const last = period[period.length - 1];
  return (
    <>
      <PeriodChoice first={first} last={last} onChoose={setPeriod} />
      <p role="status">
        {props.name}, {first === last ? monthName(first) : `${monthName(first)} to ${monthName(last)}`}.
      </p>
      {reports.loading && !reports.data ? <Loading what="the reports" /> : null}
      {reports.error ? <Problem text={`The reports could not be shown: ${reports.error}`} /> : null}
      {reports.data ? (
        <>
          <Caseload r={reports.data} />
          <Compliance r={reports.data} />
          <Timeliness r={reports.data} />
          <Gaps r={reports.data} />
          <Experience r={reports.data} />
          <Tcm r={reports.data}>
            <Download key={last} api={api} org={org} month={last} />
          </Tcm>
        </>
      ) : null}
    </>
  );
}

/** The period of the reports: a first and a last month, shown when asked. */
function PeriodChoice(props: { first: string; last: string; onChoose: (months: string[]) => void }) {
  const [first, setFirst] = useState(props.first);
  const [last, setLast] = useState(props.last);
  const [error, setError] = useState<string>();
  const newestFirst = [...CHOICES].reverse();
  function show(event: Event) {
    event.preventDefault();
    if (first > last) {
      setError("The first month must not come after the last month.");
      return;
    }
    setError(undefined);
    props.onChoose(monthsBetween(first, last));
  }
  return (
    <form class="filters" onSubmit={show} aria-label="Period of the reports">
      <MonthField id="period-from" label="From the start of" months={newestFirst} value={first} onChange={setFirst} />
      <MonthField id="period-to" label="To the end of" months={newestFirst} value={last} onChange={setLast} />
      <button type="submit">Show the reports</button>
      <Problem text={error} />
    </form>
  );
}

function MonthField(props: {
  id: string;
  label: string;
  months: string[];
  value: string;
  onChange: (month: string) => void;
}) {
  return (
    <div class="field">
      <label for={props.id}>{props.label}</label>
      <select id={props.id} value={props.value} onChange={(e) => props.onChange(e.currentTarget.value)}>
        {props.months.map((m) => (
          <option key={m} value={m}>
            {monthName(m)}
          </option>
        ))}
      </select>
    </div>
  );
}

function Download(props: { api: Api; org: string; month: string }) {
  const { api, org } = props;
  const [month, setMonth] = useState(props.month);
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  async function download(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const response = await api.raw("GET", `/reports/tcm-encounters?organization=${encodeURIComponent(org)}&period=${month}&format=csv`, undefined, "text/csv");
      const blob = await response.blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `tcm-encounters-${month}.csv`;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    } catch (e) {
      setError(e instanceof FhirError ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  }
  return (
    <form class="filters" onSubmit={download} aria-label="Download billable encounters">
      <div class="field">
        <label for="tcm-month">Month of TCM encounters (billing)</label>
        <input id="tcm-month" type="month" value={month} onInput={(e) => setMonth(e.currentTarget.value)} />
      </div>
      <button type="submit" disabled={busy}>
        Download the CSV
      </button>
      <Problem text={error} />
    </form>
  );
}
