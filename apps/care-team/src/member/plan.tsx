// Write and revise the member's care plan and goals. A revision is a new version of the same
// resource (PUT), so the history keeps what it said before.
import { useState } from "preact/hooks";
import type { Api } from "../fhir/client";
import { day, todayIso } from "../fhir/format";
import type { Json, Resource } from "../fhir/types";
import { Done, Problem } from "../ui";
import type { Member } from "./data";

function useSave() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const [done, setDone] = useState<string>();
  async function run(work: () => Promise<unknown>, text: string) {
    setBusy(true);
    setError(undefined);
    setDone(undefined);
    try {
      await work();
      setDone(text);
      return true;
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
      return false;
    } finally {
      setBusy(false);
    }
  }
  return { busy, error, done, run };
}

export function CarePlanEditor(props: { api: Api; m: Member; reload: () => void }) {
  const { api, m } = props;
  const active = m.carePlans.find((p) => p.status === "active") ?? m.carePlans.find((p) => p.status === "draft");
  const [title, setTitle] = useState(String(active?.title ?? "Care plan"));
  const [text, setText] = useState(String(active?.description ?? ""));
  const [review, setReview] = useState(String(active?.period?.end ?? ""));
  const save = useSave();
  const goals = m.goals.filter((g) => g.lifecycleStatus !== "cancelled" && g.lifecycleStatus !== "entered-in-error");

  async function submit(event: Event) {
    event.preventDefault();
    const plan: Resource = {
      ...(active ?? {
        resourceType: "CarePlan",
        status: "active",
        intent: "plan",
        subject: { reference: `Patient/${m.patient.id}` },
        created: new Date().toISOString(),
      }),
      resourceType: "CarePlan",
      title: title.trim() || "Care plan",
      description: text.trim(),
      goal: goals.map((g) => ({ reference: `Goal/${g.id}` })),
    };
    if (!plan.period?.start) plan.period = { ...(plan.period ?? {}), start: todayIso() };
    if (review) plan.period = { ...plan.period, end: review };
    else if (plan.period) delete plan.period.end;
    if (api.user) plan.author = { reference: api.user };
    if (!plan.description) delete plan.description;
    if (!plan.goal.length) delete plan.goal;
    const ok = await save.run(() => (active ? api.update(plan) : api.create(plan)), active ? "Care plan revised." : "Care plan written.");
    if (ok) props.reload();
  }

  return (
    <>
      {active ? (
        <p class="muted">
          Current plan since {day(active.created ?? active.period?.start)}
          {active.period?.end ? `, to review by ${day(active.period.end)}` : ""} (version {active.meta?.versionId ?? "1"}).
        </p>
      ) : (
        <p class="muted">No active care plan yet.</p>
      )}
      <form onSubmit={submit} aria-label="Care plan">
        <div class="field">
          <label for="plan-title">Title</label>
          <input id="plan-title" type="text" value={title} onInput={(e) => setTitle(e.currentTarget.value)} />
        </div>
        <div class="field">
          <label for="plan-text">The plan, in plain words</label>
          <textarea id="plan-text" rows={4} value={text} onInput={(e) => setText(e.currentTarget.value)} />
        </div>
        <div class="field">
          <label for="plan-review">Review by (optional)</label>
          <input id="plan-review" type="date" value={review} onInput={(e) => setReview(e.currentTarget.value)} />
        </div>
        <p class="muted">The plan links the member's {goals.length} current {goals.length === 1 ? "goal" : "goals"}.</p>
        <button type="submit" disabled={save.busy}>
          {active ? "Save a revision" : "Write the care plan"}
        </button>
        <Problem text={save.error} />
        <Done text={save.done} />
      </form>
    </>
  );
}

export function GoalEditor(props: { api: Api; m: Member; reload: () => void }) {
  const { api, m } = props;
  const [text, setText] = useState("");
  const [due, setDue] = useState("");
  const save = useSave();

  async function add(event: Event) {
    event.preventDefault();
    if (!text.trim()) return;
    const goal: Resource = {
      resourceType: "Goal",
      lifecycleStatus: "active",
      description: { text: text.trim() },
      subject: { reference: `Patient/${m.patient.id}` },
      expressedBy: { reference: `Patient/${m.patient.id}` },
      startDate: todayIso(),
    };
    if (due) goal.target = [{ dueDate: due }];
    const ok = await save.run(() => api.create(goal), "Goal added.");
    if (ok) {
      setText("");
      setDue("");
      props.reload();
    }
  }

  return (
    <>
      {m.goals.length === 0 ? (
        <p>No goals yet.</p>
      ) : (
        <ul class="goals">
          {m.goals.map((g) => (
            <GoalItem key={g.id} api={api} goal={g} reload={props.reload} />
          ))}
        </ul>
      )}
      <form onSubmit={add} aria-label="Add a goal">
        <div class="field">
          <label for="goal-new">A new goal, in the member's words</label>
          <input id="goal-new" type="text" value={text} onInput={(e) => setText(e.currentTarget.value)} />
        </div>
        <div class="field">
          <label for="goal-due">Target date (optional)</label>
          <input id="goal-due" type="date" value={due} onInput={(e) => setDue(e.currentTarget.value)} />
        </div>
        <button type="submit" disabled={save.busy}>
          Add the goal
        </button>
        <Problem text={save.error} />
        <Done text={save.done} />
      </form>
    </>
  );
}

const STATUSES: [string, string][] = [
  ["active", "Working on it"],
  ["on-hold", "On hold"],
  ["completed", "Reached"],
  ["cancelled", "No longer wanted"],
];

function GoalItem(props: { api: Api; goal: Resource; reload: () => void }) {
  const { api, goal } = props;
  const [editing, setEditing] = useState(false);
  const [text, setText] = useState(String(goal.description?.text ?? ""));
  const [status, setStatus] = useState(String(goal.lifecycleStatus ?? "active"));
  const save = useSave();
  const dueDate = ((goal.target ?? []) as Json[]).find((t) => t.dueDate)?.dueDate;
  const id = String(goal.id);

  async function submit(event: Event) {
    event.preventDefault();
    const revised: Resource = { ...goal, description: { ...goal.description, text: text.trim() }, lifecycleStatus: status };
    if (status === "completed") revised.achievementStatus = { coding: [{ system: "http://terminology.hl7.org/CodeSystem/goal-achievement", code: "achieved" }] };
    const ok = await save.run(() => api.update(revised), "Goal revised.");
    if (ok) {
      setEditing(false);
      props.reload();
    }
  }

  return (
    <li>
      <span class="goal-text">{String(goal.description?.text ?? "")}</span>
      <span class="muted">
        {" "}
        · {STATUSES.find(([c]) => c === goal.lifecycleStatus)?.[1] ?? String(goal.lifecycleStatus)}
        {dueDate ? ` · by ${day(dueDate)}` : ""}
      </span>{" "}
      {editing ? (
        <form onSubmit={submit} aria-label="Revise the goal">
          <div class="field">
            <label for={`goal-${id}`}>Goal</label>
            <input id={`goal-${id}`} type="text" value={text} onInput={(e) => setText(e.currentTarget.value)} />
          </div>
          <div class="field">
            <label for={`goal-status-${id}`}>Status</label>
            <select id={`goal-status-${id}`} value={status} onChange={(e) => setStatus(e.currentTarget.value)}>
              {STATUSES.map(([code, text]) => (
                <option key={code} value={code}>
                  {text}
                </option>
              ))}
            </select>
          </div>
          <button type="submit" disabled={save.busy}>
            Save the goal
          </button>{" "}
          <button type="button" class="secondary" onClick={() => setEditing(false)}>
            Cancel
          </button>
        </form>
      ) : (
        <button type="button" class="secondary small" onClick={() => setEditing(true)}>
          Revise<span class="visually-hidden"> the goal: {String(goal.description?.text ?? "")}</span>
        </button>
      )}
      <Problem text={save.error} />
      {save.done ? <Done text={save.done} /> : null}
    </li>
  );
}
