// The supervisor view: the reports of /reports for my organization (JSON), drawn as charts
// with tables, and the billable TCM encounters as a CSV download.
import { useState } from "preact/hooks";
import type { Api } from "../fhir/client";
import { FhirError } from "../fhir/client";
import { humanName, ruleName } from "../fhir/format";
import type { Json, Resource } from "../fhir/types";
import { Loading, Problem, Screen, Section, useLoad } from "../ui";
import { BarChart, type Bar } from "./charts";

function months(count: number): string[] {
  const now = new Date();
  const out: string[] = [];
  for (let i = count - 1; i >= 0; i--) {
    const d = new Date(now.getFullYear(), now.getMonth() - i, 1);
    out.push(`${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}`);
  }
  return out;
}

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

interface Reports {
  compliance: Json;
  gaps: Json[];
  managers: Map<string, string>;
}

async function loadReports(api: Api, org: string, period: string[]): Promise<Reports> {
  const scope = `organization=${encodeURIComponent(org)}`;
  const [compliance, ...gaps] = await Promise.all([
    api.json<Json>("GET", `/reports/contact-compliance?${scope}&period=${period[0]}..${period[period.length - 1]}`),
    ...period.map((m) => api.json<Json>("GET", `/reports/gaps?${scope}&period=${m}`)),
  ]);
  const refs = new Set<string>();
  for (const r of (compliance.rows ?? []) as Json[]) if (r.care_manager) refs.add(String(r.care_manager));
  const managers = new Map<string, string>();
  await Promise.all(
    [...refs].map(async (m) => {
      const reference = m.includes("/") ? m : `Practitioner/${m}`;
      const who = await api.read<Resource>(reference).catch(() => undefined);
      managers.set(m, who ? humanName(who) : m);
    }),
  );
  return { compliance, gaps, managers };
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
  const period = months(6);
  const reports = useLoad(() => loadReports(api, org, period), [org]);
  return (
    <>
      <p>
        {props.name}, {period[0]} to {period[period.length - 1]}.
      </p>
      <Download api={api} org={org} month={period[period.length - 1]} />
      {reports.loading && !reports.data ? <Loading what="the reports" /> : null}
      {reports.error ? (
        <Problem text={`The reports could not be shown: ${reports.error}`} />
      ) : null}
      {reports.data ? <Charts r={reports.data} period={period} /> : null}
    </>
  );
}

function Charts(props: { r: Reports; period: string[] }) {
  const { r, period } = props;
  const cells = new Map<string, { contacts: number; required: number }>();
  for (const row of (r.compliance.rows ?? []) as Json[]) {
    const key = `${row.care_manager ?? "none"}|${row.month}`;
    const cell = cells.get(key) ?? { contacts: 0, required: 0 };
    cell.contacts += Number(row.contacts ?? 0);
    cell.required += Number(row.required ?? 0);
    cells.set(key, cell);
  }
  const label = (key: string) => {
    const [m, month] = key.split("|");
    return `${m === "none" ? "No care manager" : r.managers.get(m) ?? m}, ${month}`;
  };
  const bars: Bar[] = [...cells.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([key, c]) => ({ label: label(key), value: c.contacts, target: c.required }));
  const rules = new Map<string, number[]>();
  r.gaps.forEach((report, i) => {
    for (const row of (report.rows ?? []) as Json[]) {
      const counts = rules.get(String(row.rule)) ?? period.map(() => 0);
      counts[i] += Number(row.count ?? 0);
      rules.set(String(row.rule), counts);
    }
  });
  const summary = (r.compliance.summary ?? {}) as Json;
  return (
    <>
      <Section title="Contacts against the requirement">
        <p>
          {String(summary.members_compliant_every_month ?? 0)} of {String(summary.members ?? 0)} members had every month's contacts;{" "}
          {String(summary.contacts ?? 0)} qualifying contacts in all.
        </p>
        {bars.length ? <BarChart title="Qualifying contacts per care manager and month" bars={bars} unit="contacts" /> : <p>No enrolled members in this period.</p>}
        {bars.length ? (
          <table>
            <caption>Contacts per care manager and month</caption>
            <thead>
              <tr>
                <th scope="col">Care manager and month</th>
                <th scope="col">Contacts</th>
                <th scope="col">Required</th>
              </tr>
            </thead>
            <tbody>
              {bars.map((b) => (
                <tr key={b.label}>
                  <th scope="row">{b.label}</th>
                  <td>{b.value}</td>
                  <td>{b.target}</td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : null}
      </Section>
      <Section title="Care gaps by kind over time">
        {rules.size === 0 ? (
          <p>No care gaps were open in this period.</p>
        ) : (
          <>
            <BarChart
              title={`Care gaps open at some time, ${period[0]} to ${period[period.length - 1]}`}
              bars={[...rules.entries()].map(([rule, counts]) => ({ label: ruleName(rule), value: counts.reduce((a, b) => a + b, 0) }))}
              unit="gaps"
            />
            <table>
              <caption>Care gaps open at some time in each month, by kind</caption>
              <thead>
                <tr>
                  <th scope="col">Kind</th>
                  {period.map((m) => (
                    <th scope="col" key={m}>
                      {m}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {[...rules.entries()].map(([rule, counts]) => (
                  <tr key={rule}>
                    <th scope="row">{ruleName(rule)}</th>
                    {counts.map((c, i) => (
                      <td key={i}>{c}</td>
                    ))}
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        )}
      </Section>
    </>
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
