// Fill a Questionnaire for a member (the comprehensive assessment or the engagement sheet) and
// send it as a completed QuestionnaireResponse; the server checks it and says what is wrong.
import { useRef, useState } from "preact/hooks";
import type { Api } from "../fhir/client";
import { humanName } from "../fhir/format";
import { QUESTIONNAIRE, type Json, type Resource } from "../fhir/types";
import { Loading, Problem, Screen, useLoad } from "../ui";
import { initialLang, LANGS, saveLang, translated, type Lang } from "./language";
import { blankResponse, missing, prune, type QItem, type RItem } from "./model";
import { expandAll, Items, type FormContext } from "./render";

export const FORMS: Record<string, { url: string; title: string }> = {
  assessment: { url: QUESTIONNAIRE.assessment, title: "Comprehensive assessment" },
  engagement: { url: QUESTIONNAIRE.engagement, title: "Engagement sheet" },
};

export function flash(text: string) {
  sessionStorage.setItem("cmfhir-care-team-flash", text);
}

async function load(api: Api, patientId: string, url: string) {
  const [questionnaire] = await api.search(`Questionnaire?url=${encodeURIComponent(url)}&_sort=-_lastUpdated&_count=1`, 1);
  if (!questionnaire) throw new Error("The server does not hold this questionnaire.");
  const patient = await api.read(`Patient/${patientId}`);
  const options = await expandAll((questionnaire.item ?? []) as QItem[], async (vs) => {
    const expanded = await api.json<Json>("GET", `ValueSet/$expand?url=${encodeURIComponent(vs)}`);
    return ((expanded.expansion?.contains ?? []) as Json[]).map((c) => ({
      valueCoding: { system: c.system, code: c.code, display: c.display },
    }));
  });
  return { questionnaire, patient, options };
}

export function QuestionnaireScreen(props: { api: Api; patientId: string; which: string }) {
  const { api, patientId, which } = props;
  const form = FORMS[which] ?? FORMS.assessment;
  const data = useLoad(() => load(api, patientId, form.url), [patientId, form.url]);
  if (!data.data) {
    return (
      <Screen title={form.title}>
        <Problem text={data.error} />
        {data.loading ? <Loading what="the form" /> : null}
      </Screen>
    );
  }
  return <Filling api={api} {...data.data} title={form.title} />;
}

function Filling(props: { api: Api; questionnaire: Resource; patient: Resource; options: Map<string, Json[]>; title: string }) {
  const { api, questionnaire, patient } = props;
  const items = (questionnaire.item ?? []) as QItem[];
  const root = useRef<RItem[]>(blankResponse(items));
  const [, setTick] = useState(0);
  const [errors, setErrors] = useState<[string, string][]>([]);
  const [errorsLang, setErrorsLang] = useState<Lang>("en"); // the language the list was made in
  const [problem, setProblem] = useState<string>();
  const [busy, setBusy] = useState(false);
  const summary = useRef<HTMLDivElement>(null);
  const [lang, setLang] = useState<Lang>(initialLang);
  const ctx: FormContext = {
    lang,
    root: root.current,
    options: props.options,
    changed: () => setTick((t) => t + 1),
    errors: new Set(errors.map(([path]) => path)),
  };

  async function submit(event: Event) {
    event.preventDefault();
    setProblem(undefined);
    const unanswered = missing(items, root.current, root.current, "", lang);
    setErrors(unanswered);
    setErrorsLang(lang);
    if (unanswered.length) {
      setTimeout(() => summary.current?.focus(), 0);
      return;
    }
    setBusy(true);
    const response: Resource = {
      resourceType: "QuestionnaireResponse",
      questionnaire: questionnaire.version ? `${questionnaire.url}|${questionnaire.version}` : questionnaire.url,
      status: "completed",
      subject: { reference: `Patient/${patient.id}` },
      authored: new Date().toISOString(),
      source: { reference: `Patient/${patient.id}` },
      item: prune(items, root.current, root.current),
    };
    if (api.user) response.author = { reference: api.user };
    try {
      await api.create(response);
      flash(`${props.title} saved.`);
      window.location.hash = `#/member/${encodeURIComponent(String(patient.id))}`;
    } catch (e) {
      setProblem(`Not saved: ${e instanceof Error ? e.message : String(e)}`);
      setBusy(false);
      setTimeout(() => summary.current?.focus(), 0);
    }
  }

  return (
    <Screen title={`${props.title}: ${humanName(patient)}`}>
      <p>
        <a href={`#/member/${encodeURIComponent(String(patient.id))}`}>Back to {humanName(patient)}</a>
      </p>
      <p class="muted">Questions marked (required) need an answer. Everything else is optional.</p>
      <div class="field">
        <label for="form-lang">Language of the questions</label>
        <select
          id="form-lang"
          value={lang}
          onChange={(e) => {
            const chosen = e.currentTarget.value as Lang;
            saveLang(chosen);
            setLang(chosen);
          }}
        >
          {LANGS.map(([code, name]) => (
            <option key={code} value={code} lang={code}>
              {name}
            </option>
          ))}
        </select>
      </div>
      <div ref={summary} tabIndex={-1}>
        {errors.length ? (
          <div class="problem" role="alert">
            <p>Some required questions have no answer:</p>
            <ul>
              {errors.map(([path, text]) => (
                <li key={path} lang={errorsLang}>
                  <a href={`#q-${path}`} onClick={(e) => {
                      e.preventDefault();
                      const target = document.getElementById(`q-${path.replace(/[^A-Za-z0-9_-]/g, "_")}`);
                      const control = target?.matches("input, textarea, select") ? target : target?.querySelector("input, textarea, select");
                      (control as HTMLElement | null | undefined)?.focus();
                    }}>
                    {text}
                  </a>
                </li>
              ))}
            </ul>
          </div>
        ) : null}
        <Problem text={problem} />
      </div>
      <form onSubmit={submit} noValidate aria-label={props.title} lang={lang}>
        {lang !== "en" && translated(questionnaire, "title", lang) ? <p class="form-title">{translated(questionnaire, "title", lang)}</p> : null}
        <Items items={items} response={root.current} ctx={ctx} path="" level={1} />
        <div class="actions" lang="en">
          <button type="submit" disabled={busy}>
            {busy ? "Saving…" : "Save the answers"}
          </button>
        </div>
      </form>
    </Screen>
  );
}
