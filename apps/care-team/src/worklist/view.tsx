// My worklist: my members' open and prospective care gaps, most overdue first, filterable by
// rule and acuity tier, each acknowledged in one click; new gaps arrive live.
import { useEffect, useMemo, useState } from "preact/hooks";
import type { Api } from "../fhir/client";
import { day, gapRule, gapStatus, humanName, ruleName } from "../fhir/format";
import { watchGaps } from "../fhir/live";
import { Loading, Problem, Screen, useLoad } from "../ui";
import { acknowledge, loadWorklist, type Row } from "./data";

const TIERS = ["high", "moderate", "low"];

export function Worklist(props: { api: Api }) {
  const { api } = props;
  const [mine, setMine] = useState(false);
  const list = useLoad(() => loadWorklist(api, mine), [mine]);
  const [rule, setRule] = useState("");
  const [tier, setTier] = useState("");
  const [live, setLive] = useState("Connecting live updates…");
  const [news, setNews] = useState("");
  const [done, setDone] = useState<Set<string>>(new Set());

  useEffect(
    () =>
      watchGaps(
        api,
        () => {
          setNews("The worklist was updated.");
          list.reload();
        },
        setLive,
      ),
    [api],
  );

  const rows = (list.data ?? []).filter((r) => !done.has(String(r.issue.id)));
  const rules = useMemo(() => [...new Set((list.data ?? []).map((r) => gapRule(r.issue)))].sort(), [list.data]);
  const shown = rows.filter((r) => (!rule || gapRule(r.issue) === rule) && (!tier || r.tier === tier));

  return (
    <Screen title="My worklist">
      <p class="muted" role="status">
        {live} {news}
      </p>
      <form class="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filter the worklist">
        <div class="field">
          <label for="filter-rule">Kind of gap</label>
          <select id="filter-rule" value={rule} onChange={(e) => setRule(e.currentTarget.value)}>
            <option value="">All kinds</option>
            {rules.map((r) => (
              <option value={r} key={r}>
                {ruleName(r)}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="filter-tier">Acuity tier</label>
          <select id="filter-tier" value={tier} onChange={(e) => setTier(e.currentTarget.value)}>
            <option value="">All tiers</option>
            {TIERS.map((t) => (
              <option value={t} key={t}>
                {t[0].toUpperCase() + t.slice(1)}
              </option>
            ))}
          </select>
        </div>
        <div class="field check">
          <input id="filter-mine" type="checkbox" checked={mine} onChange={(e) => setMine(e.currentTarget.checked)} />
          <label for="filter-mine">Only members I am the care manager of</label>
        </div>
      </form>
      <Problem text={list.error} />
      {list.loading && !list.data ? <Loading what="your worklist" /> : null}
      {list.data ? (
        <>
          <p aria-live="polite">
            {shown.length === 0 ? "Nothing open. Well done." : `${shown.length} ${shown.length === 1 ? "gap" : "gaps"} to work on.`}
          </p>
          <ol class="worklist">
            {shown.map((row) => (
              <GapCard key={row.issue.id} api={api} row={row} onDone={(id) => setDone(new Set([...done, id]))} />
            ))}
          </ol>
        </>
      ) : null}
    </Screen>
  );
}

function GapCard(props: { api: Api; row: Row; onDone: (id: string) => void }) {
  const { api, row } = props;
  const { issue } = row;
  const id = String(issue.id);
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const status = gapStatus(issue);
  const patientId = String(issue.patient?.reference ?? "").split("/")[1] ?? "";
  const when = day(issue.identifiedDateTime);

  async function ack() {
    setBusy(true);
    setError(undefined);
    try {
      await acknowledge(api, issue, note);
      props.onDone(id);
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
      setBusy(false);
    }
  }

  return (
    <li class={`gap ${status}`} data-gap={id}>
      <div class="gap-head">
        <h2 class="gap-title">{ruleName(gapRule(issue))}</h2>
        <span class={`badge ${status}`}>{status === "open-gap" ? "Overdue" : "Coming up"}</span>
      </div>
      <p>
        <a href={`#/member/${encodeURIComponent(patientId)}`}>{humanName(row.patient)}</a>
        {row.tier ? <span class="muted"> · {row.tier} acuity</span> : null}
        {when ? <span class="muted"> · {status === "open-gap" ? `since ${when}` : `due ${when}`}</span> : null}
      </p>
      {issue.detail ? <p class="detail">{String(issue.detail)}</p> : null}
      <div class="ack">
        <label for={`note-${id}`}>Note (optional)</label>
        <input id={`note-${id}`} type="text" value={note} onInput={(e) => setNote(e.currentTarget.value)} />
        <button type="button" onClick={ack} disabled={busy}>
          {busy ? "Saving…" : "Acknowledge"}
          <span class="visually-hidden">
            {" "}
            {ruleName(gapRule(issue))} for {humanName(row.patient)}
          </span>
        </button>
      </div>
      <Problem text={error} />
    </li>
  );
}
