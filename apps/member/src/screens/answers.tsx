// About me: the engagement sheet, a generic rendering of its Questionnaire (groups, enableWhen,
// required, choice from answerOption or an expanded answerValueSet, repeats) and the member's
// latest QuestionnaireResponse to it, which they update.
import { useState } from "preact/hooks";
import { type Api, CANONICAL, problem, type Resource } from "../fhir";
import { useLoad } from "../hooks";
import { type Lang, useI18n } from "../i18n";
import { translated } from "../translation";
import { Loading, Screen } from "../ui";

const QUESTIONNAIRE = `${CANONICAL}engagement-sheet`;

type Answer = Record<string, any>;
type Answers = Record<string, Answer[]>;
type Coding = { system?: string; code?: string; display?: string };
type Form = { questionnaire: Resource; response?: Resource; options: Record<string, Coding[]> };

function collect(items: any[] | undefined, into: Answers): Answers {
  for (const item of items ?? []) {
    if (item.answer?.length) into[item.linkId] = item.answer.map((a: any) => ({ ...a, item: undefined }));
    collect(item.item, into);
    for (const a of item.answer ?? []) collect(a.item, into);
  }
  return into;
}

function valueSets(items: any[] | undefined, into: Set<string>): Set<string> {
  for (const item of items ?? []) {
    if (item.answerValueSet) into.add(item.answerValueSet);
    valueSets(item.item, into);
  }
  return into;
}

async function load(api: Api): Promise<Form> {
  const [questionnaire] = await api.search(`Questionnaire?url=${encodeURIComponent(QUESTIONNAIRE)}`, 1);
  if (!questionnaire) throw new Error("the engagement sheet is not on this server");
  const responses = await api.search(
    `QuestionnaireResponse?patient=${api.patientId}&_sort=-authored&_count=50`,
    2,
  );
  const response = responses.find((r) => String(r.questionnaire ?? "").split("|")[0] === QUESTIONNAIRE);
  const options: Record<string, Coding[]> = {};
  for (const url of valueSets(questionnaire.item, new Set())) {
    const expanded = await api
      .read(`ValueSet/$expand?url=${encodeURIComponent(url)}`)
      .catch(() => undefined);
    options[url] = (expanded?.expansion?.contains ?? []).map((c: any) => ({
      system: c.system,
      code: c.code,
      display: c.display,
    }));
  }
  return { questionnaire, response, options };
}

function hasAnswer(answers: Answers, linkId: string): boolean {
  return (answers[linkId] ?? []).some((a) => Object.keys(a).some((k) => k.startsWith("value")));
}

function enabled(item: any, answers: Answers): boolean {
  const conditions: any[] = item.enableWhen ?? [];
  if (!conditions.length) return true;
  const results = conditions.map((c) => {
    const given = answers[c.question] ?? [];
    if (c.operator === "exists") return given.length > 0 === Boolean(c.answerBoolean);
    const expected = Object.entries(c).find(([k]) => k.startsWith("answer"))?.[1] as any;
    const same = given.some((a) => {
      const value = Object.entries(a).find(([k]) => k.startsWith("value"))?.[1] as any;
      if (value && typeof value === "object") return value.code === expected?.code;
      return value === expected;
    });
    return c.operator === "!=" ? !same : same;
  });
  return item.enableBehavior === "any" ? results.some(Boolean) : results.every(Boolean);
}

/** The response items for what is answered and enabled, in the Questionnaire's shape. */
function responseItems(items: any[] | undefined, answers: Answers): any[] {
  const out: any[] = [];
  for (const item of items ?? []) {
    if (!enabled(item, answers) || item.type === "display") continue;
    if (item.type === "group") {
      const inner = responseItems(item.item, answers);
      if (inner.length) out.push({ linkId: item.linkId, text: item.text, item: inner });
    } else if (hasAnswer(answers, item.linkId)) {
      out.push({ linkId: item.linkId, text: item.text, answer: answers[item.linkId] });
    }
  }
  return out;
}

/** The required questions (and required groups with nothing in them) left unanswered. */
function missing(items: any[] | undefined, answers: Answers, lang: Lang): string[] {
  const out: string[] = [];
  for (const item of items ?? []) {
    if (!enabled(item, answers)) continue;
    if (item.type === "group") {
      const inner = missing(item.item, answers, lang);
      out.push(...inner);
      if (item.required && !inner.length && !responseItems(item.item, answers).length)
        out.push(translated(item, "text", lang) ?? item.linkId);
    } else if (item.required && item.type !== "display" && !hasAnswer(answers, item.linkId)) {
      out.push(translated(item, "text", lang) ?? item.linkId);
    }
  }
  return out;
}

export function Answers(props: { api: Api }) {
  const { t } = useI18n();
  const state = useLoad(() => load(props.api));
  return (
    <Screen title={t.navAnswers} intro={t.answersIntro}>
      <Loading state={state}>{(form) => <Sheet api={props.api} form={form} saved={state.reload} />}</Loading>
    </Screen>
  );
}

function Sheet(props: { api: Api; form: Form; saved: () => void }) {
  const { api, form } = props;
  const { t, lang } = useI18n();
  const [answers, setAnswers] = useState<Answers>(() => collect(form.response?.item, {}));
  const [notice, setNotice] = useState<{ text: string; error?: boolean }>();
  const set = (linkId: string, value: Answer[]) => setAnswers((a) => ({ ...a, [linkId]: value }));

  async function save(event: Event) {
    event.preventDefault();
    const gaps = missing(form.questionnaire.item, answers, lang);
    if (gaps.length) {
      setNotice({ text: `${t.answersMissing} ${gaps.join("; ")}`, error: true });
      return;
    }
    const response: Resource = {
      ...(form.response ?? {}),
      resourceType: "QuestionnaireResponse",
      questionnaire: QUESTIONNAIRE,
      status: "completed",
      subject: { reference: api.patientRef },
      author: { reference: api.patientRef },
      source: { reference: api.patientRef },
      authored: new Date().toISOString(),
      item: responseItems(form.questionnaire.item, answers),
    };
    try {
      if (response.id) await api.update(response);
      else await api.create(response);
      setNotice({ text: t.answersSaved });
      props.saved();
    } catch (error) {
      setNotice({ text: `${t.failed} ${problem(error)}`, error: true });
    }
  }

  return (
    <form class="stack questionnaire" onSubmit={save} noValidate>
      {(form.questionnaire.item ?? []).map((item: any) => (
        <Item key={item.linkId} item={item} answers={answers} set={set} options={form.options} />
      ))}
      <button type="submit" class="primary">
        {t.answersSave}
      </button>
      <p role={notice?.error ? "alert" : "status"} class={notice?.error ? "error" : "notice"}>
        {notice?.text ?? ""}
      </p>
    </form>
  );
}

type ItemProps = {
  item: any;
  answers: Answers;
  set: (linkId: string, value: Answer[]) => void;
  options: Record<string, Coding[]>;
};

function Item(props: ItemProps) {
  const { item, answers, set } = props;
  const { t, lang } = useI18n();
  const text = translated(item, "text", lang);
  if (!enabled(item, answers)) return null;
  const id = `q-${item.linkId}`;
  const mark = item.required ? <span class="required"> {t.required}</span> : null;
  const given = answers[item.linkId] ?? [];
  switch (item.type) {
    case "group":
      return (
        <fieldset class="group">
          <legend>
            {text}
            {mark}
          </legend>
          {(item.item ?? []).map((child: any) => (
            <Item key={child.linkId} {...props} item={child} />
          ))}
        </fieldset>
      );
    case "display":
      return <p class="display">{text}</p>;
    case "boolean":
      return (
        <fieldset class="inline">
          <legend>
            {text}
            {mark}
          </legend>
          {[true, false].map((value) => (
            <label key={String(value)}>
              <input
                type="radio"
                name={id}
                checked={given[0]?.valueBoolean === value}
                onChange={() => set(item.linkId, [{ valueBoolean: value }])}
              />{" "}
              {value ? t.yes : t.no}
            </label>
          ))}
        </fieldset>
      );
    case "choice":
    case "open-choice":
      return <Choice {...props} id={id} mark={mark} />;
    case "integer":
    case "decimal":
      return (
        <p class="field">
          <label for={id}>
            {text}
            {mark}
          </label>
          <input
            id={id}
            type="number"
            value={given[0]?.valueInteger ?? given[0]?.valueDecimal ?? ""}
            onInput={(e) => {
              const n = Number(e.currentTarget.value);
              const v = e.currentTarget.value === "" || Number.isNaN(n) ? [] : [item.type === "integer" ? { valueInteger: Math.trunc(n) } : { valueDecimal: n }];
              set(item.linkId, v);
            }}
          />
        </p>
      );
    case "string":
    case "text":
      return (
        <p class="field">
          <label for={id}>
            {text}
            {mark}
          </label>
          {item.type === "text" ? (
            <textarea
              id={id}
              rows={3}
              value={given[0]?.valueString ?? ""}
              onInput={(e) => set(item.linkId, e.currentTarget.value ? [{ valueString: e.currentTarget.value }] : [])}
            />
          ) : (
            <input
              id={id}
              type="text"
              value={given[0]?.valueString ?? ""}
              onInput={(e) => set(item.linkId, e.currentTarget.value ? [{ valueString: e.currentTarget.value }] : [])}
            />
          )}
        </p>
      );
    default:
      return null; // reference, attachment...: not asked of members here
  }
}

function Choice(props: ItemProps & { id: string; mark: preact.JSX.Element | null }) {
  const { item, answers, set, id, mark } = props;
  const { t, lang } = useI18n();
  const given = answers[item.linkId] ?? [];
  // Each answer as it is stored (the value alone) and as it is shown (in the member's language;
  // a ValueSet's displays are English only, and marked so for a Spanish page).
  const offered: [Answer, string][] = item.answerValueSet
    ? (props.options[item.answerValueSet] ?? []).map((c) => [{ valueCoding: c }, c.display ?? c.code ?? ""])
    : (item.answerOption ?? []).map((o: any) => {
        const key = Object.keys(o).find((k) => k.startsWith("value")) ?? "valueString";
        const value = o[key];
        if (key === "valueCoding") {
          const { _display: _d, extension: _e, ...coding } = value;
          return [{ valueCoding: coding }, translated(value, "display", lang) ?? value.code];
        }
        return [{ [key]: value }, typeof value === "string" ? translated(o, key, lang) ?? value : String(value)];
      });
  const choices = offered.map(([value]) => value);
  const same = (a: Answer, b: Answer) =>
    a.valueCoding && b.valueCoding
      ? a.valueCoding.code === b.valueCoding.code && a.valueCoding.system === b.valueCoding.system
      : JSON.stringify(a) === JSON.stringify(b);
  const chosen = (a: Answer) => given.some((g) => same(a, g));
  const free = given.find((g) => g.valueString !== undefined && !choices.some((c) => same(c, g)));
  const freeText = item.type === "open-choice" ? (
    <p class="field">
      <label for={`${id}-other`}>{t.other}</label>
      <input
        id={`${id}-other`}
        type="text"
        value={free?.valueString ?? ""}
        onInput={(e) => {
          const kept = item.repeats ? given.filter((g) => g !== free) : [];
          const text = e.currentTarget.value;
          set(item.linkId, [...kept, ...(text ? [{ valueString: text }] : [])]);
        }}
      />
    </p>
  ) : null;
  return (
    <fieldset class={item.repeats ? "choices" : "choices inline"}>
      <legend>
        {translated(item, "text", lang)}
        {mark}
      </legend>
      {choices.map((choice, i) => (
        <label key={i}>
          <input
            type={item.repeats ? "checkbox" : "radio"}
            name={id}
            checked={chosen(choice)}
            onChange={(e) => {
              if (!item.repeats) set(item.linkId, [choice]);
              else if (e.currentTarget.checked) set(item.linkId, [...given, choice]);
              else set(item.linkId, given.filter((g) => !same(g, choice)));
            }}
          />{" "}
          {item.answerValueSet && lang !== "en" ? <span lang="en">{offered[i][1]}</span> : offered[i][1]}
        </label>
      ))}
      {freeText}
    </fieldset>
  );
}
