import { useState } from "preact/hooks";
import { type Api, problem, type Resource, today } from "../fhir";
import { useLoad } from "../hooks";
import { useI18n } from "../i18n";
import { Loading, Notice, Screen } from "../ui";

export function Goals(props: { api: Api }) {
  const { api } = props;
  const { t } = useI18n();
  const state = useLoad(() => api.search(`Goal?patient=${api.patientId}&_sort=-_lastUpdated`));
  const [text, setText] = useState("");
  const [notice, setNotice] = useState<{ text: string; error?: boolean }>();
  const [busy, setBusy] = useState(false);

  async function add(event: Event) {
    event.preventDefault();
    if (!text.trim()) {
      setNotice({ text: t.goalEmpty, error: true });
      return;
    }
    setBusy(true);
    try {
      await api.create({
        resourceType: "Goal",
        lifecycleStatus: "active",
        description: { text: text.trim() },
        subject: { reference: api.patientRef },
        expressedBy: { reference: api.patientRef },
        startDate: today(),
      });
      setText("");
      setNotice({ text: t.goalAdded });
      state.reload();
    } catch (error) {
      setNotice({ text: `${t.failed} ${problem(error)}`, error: true });
    } finally {
      setBusy(false);
    }
  }

  return (
    <Screen title={t.navGoals} intro={t.goalsIntro}>
      <Loading state={state}>
        {(goals) =>
          goals.length === 0 ? (
            <p>{t.goalsNone}</p>
          ) : (
            <ul class="cards">
              {goals.map((goal) => (
                <GoalItem key={goal.id} api={api} goal={goal} saved={() => {
                  setNotice({ text: t.goalSaved });
                  state.reload();
                }} />
              ))}
            </ul>
          )
        }
      </Loading>
      <form class="stack" onSubmit={add}>
        <label for="new-goal">{t.goalNew}</label>
        <textarea id="new-goal" rows={3} value={text} onInput={(e) => setText(e.currentTarget.value)} />
        <button type="submit" class="primary" disabled={busy}>
          {t.goalAdd}
        </button>
      </form>
      <Notice text={notice?.text} error={notice?.error} />
    </Screen>
  );
}

function GoalItem(props: { api: Api; goal: Resource; saved: () => void }) {
  const { t } = useI18n();
  const { goal } = props;
  const words: string = goal.description?.text ?? goal.description?.coding?.[0]?.display ?? "";
  const [editing, setEditing] = useState(false);
  const [text, setText] = useState(words);
  const [error, setError] = useState<string>();
  const field = `goal-${goal.id}`;

  async function save(event: Event) {
    event.preventDefault();
    if (!text.trim()) {
      setError(t.goalEmpty);
      return;
    }
    try {
      await props.api.update({ ...goal, description: { ...goal.description, text: text.trim() } });
      setEditing(false);
      props.saved();
    } catch (failure) {
      setError(`${t.failed} ${problem(failure)}`);
    }
  }

  if (editing)
    return (
      <li class="card">
        <form class="stack" onSubmit={save}>
          <label for={field}>{t.goalEditLabel}</label>
          <textarea id={field} rows={3} value={text} onInput={(e) => setText(e.currentTarget.value)} />
          <div class="row">
            <button type="submit" class="primary">
              {t.goalSave}
            </button>
            <button type="button" onClick={() => setEditing(false)}>
              {t.cancel}
            </button>
          </div>
          {error && (
            <p role="alert" class="error">
              {error}
            </p>
          )}
        </form>
      </li>
    );
  return (
    <li class="card">
      <p class="goal-text">{words}</p>
      <p class="meta">
        {t.status}: {t.goalStatus[goal.lifecycleStatus] ?? goal.lifecycleStatus}
      </p>
      <button type="button" onClick={() => setEditing(true)} aria-label={`${t.goalEdit}: ${words}`}>
        {t.goalEdit}
      </button>
    </li>
  );
}
