// A generic Questionnaire renderer: groups (repeating ones can be added), boolean, choice and
// open-choice (answerOption or answerValueSet), string, text, integer, decimal, date and
// display items; enableWhen hides what does not apply; required items are marked.
import type { Json } from "../fhir/types";
import { optionLabel, translated, WORDS, type Lang } from "./language";
import { blank, enabled, sameAnswer, type QItem, type RItem } from "./model";

export interface FormContext {
  root: RItem[];
  options: Map<string, Json[]>; // answerValueSet -> answers ({valueCoding})
  changed: () => void;
  errors: Set<string>;
  lang: Lang; // the language the Questionnaire's texts are shown in
}

/** The item's answers to choose from, each as it is sent (the value alone: no translation or
 *  other extension) and as it is shown (in the form's language; an expanded ValueSet's
 *  displays are English only, and marked so in a form shown in Spanish). */
function optionsOf(q: QItem, ctx: FormContext): [Json, string][] {
  const found = q.answerOption ?? (q.answerValueSet ? ctx.options.get(q.answerValueSet) : undefined) ?? [];
  return found.map((o) => {
    const value: Json = {};
    for (const [key, v] of Object.entries(o)) {
      if (key.startsWith("value")) value[key] = key === "valueCoding" ? withoutExtensions(v as Json) : v;
    }
    return [value, optionLabel(o, ctx.lang)];
  });
}

function withoutExtensions(coding: Json): Json {
  return Object.fromEntries(Object.entries(coding).filter(([key]) => !key.startsWith("_") && key !== "extension"));
}

/** The item's text in the form's language. */
const textOf = (q: QItem, ctx: FormContext) => translated(q, "text", ctx.lang);

const idOf = (path: string) => `q-${path.replace(/[^A-Za-z0-9_-]/g, "_")}`;

export function Items(props: { items: QItem[]; response: RItem[]; ctx: FormContext; path: string; level: number }) {
  const { items, response, ctx, path, level } = props;
  return (
    <>
      {items.map((q) => {
        if (!enabled(q, ctx.root)) return null;
        if (q.type === "display") return <p key={q.linkId} class="display-item">{textOf(q, ctx)}</p>;
        const mine = response.filter((r) => r.linkId === q.linkId);
        if (q.type === "group") {
          return <Group key={q.linkId} q={q} instances={mine} response={response} ctx={ctx} path={path} level={level} />;
        }
        const r = mine[0] ?? (() => {
          const made = blank(q);
          response.push(made);
          return made;
        })();
        return <Question key={q.linkId} q={q} r={r} ctx={ctx} path={`${path}${q.linkId}`} />;
      })}
    </>
  );
}

function Group(props: { q: QItem; instances: RItem[]; response: RItem[]; ctx: FormContext; path: string; level: number }) {
  const { q, response, ctx, path, level } = props;
  let instances = props.instances;
  if (instances.length === 0) {
    const made = blank(q);
    response.push(made);
    instances = [made];
  }
  const Heading = (level <= 1 ? "h2" : level === 2 ? "h3" : "h4") as "h2";
  const words = WORDS[ctx.lang];
  const text = textOf(q, ctx);
  return (
    <div class={level <= 1 ? "card group" : "group"}>
      <Heading>
        {text}
        {q.required ? <span class="req"> {words.required}</span> : null}
      </Heading>
      {instances.map((r, i) => (
        <fieldset class={q.repeats ? "instance" : "plain"} key={i}>
          {q.repeats ? <legend>{`${text ?? "Item"} ${i + 1}`}</legend> : <legend class="visually-hidden">{text}</legend>}
          <Items items={q.item ?? []} response={(r.item ??= [])} ctx={ctx} path={`${path}${q.linkId}.${i}/`} level={level + 1} />
          {q.repeats && instances.length > 1 ? (
            <button
              type="button"
              class="secondary"
              onClick={() => {
                response.splice(response.indexOf(r), 1);
                ctx.changed();
              }}
            >
              {words.remove} {text?.toLowerCase() ?? ""} {i + 1}
            </button>
          ) : null}
        </fieldset>
      ))}
      {q.repeats ? (
        <button
          type="button"
          class="secondary"
          onClick={() => {
            const last = response.lastIndexOf(instances[instances.length - 1]);
            response.splice(last + 1, 0, blank(q));
            ctx.changed();
          }}
        >
          {words.add} {text?.toLowerCase()}
        </button>
      ) : null}
    </div>
  );
}

function Question(props: { q: QItem; r: RItem; ctx: FormContext; path: string }) {
  const { q, r, ctx, path } = props;
  const id = idOf(path);
  const invalid = ctx.errors.has(path);
  const answers = (r.answer ??= []);
  const set = (next: Json[]) => {
    r.answer = next;
    ctx.changed();
  };
  const words = WORDS[ctx.lang];
  const text = (
    <>
      {textOf(q, ctx)}
      {q.required ? <span class="req"> {words.required}</span> : null}
    </>
  );
  const error = invalid ? (
    <p class="field-error" id={`${id}-error`}>
      {words.answer}
    </p>
  ) : null;
  const described = invalid ? `${id}-error` : undefined;

  if (q.type === "boolean" || q.type === "choice" || q.type === "open-choice") {
    const options: [Json, string][] =
      q.type === "boolean"
        ? [
            [{ valueBoolean: true }, words.yes],
            [{ valueBoolean: false }, words.no],
          ]
        : optionsOf(q, ctx);
    const many = Boolean(q.repeats);
    const chosen = (o: Json) => answers.some((a) => sameAnswer(a, o));
    const other = answers.find((a) => a.valueString !== undefined && !options.some(([o]) => sameAnswer(o, a)));
    return (
      <fieldset class={`field choice${invalid ? " invalid" : ""}`} id={id} aria-describedby={described}>
        <legend>{text}</legend>
        {error}
        {options.map(([o, shown], i) => (
          <div class="option" key={i}>
            <input
              type={many ? "checkbox" : "radio"}
              id={`${id}-${i}`}
              name={id}
              checked={chosen(o)}
              onChange={(e) => {
                const on = e.currentTarget.checked;
                if (many) set(on ? [...answers, o] : answers.filter((a) => !sameAnswer(a, o)));
                else set(on ? [o] : []);
              }}
            />
            <label for={`${id}-${i}`}>{q.answerValueSet && ctx.lang !== "en" ? <span lang="en">{shown}</span> : shown}</label>
          </div>
        ))}
        {q.type === "open-choice" ? (
          <div class="field">
            <label for={`${id}-other`}>{words.own}</label>
            <input
              id={`${id}-other`}
              type="text"
              value={other?.valueString ?? ""}
              onInput={(e) => {
                const typed = e.currentTarget.value;
                const kept = answers.filter((a) => a !== other && (many || a.valueString === undefined));
                set(typed ? [...(many ? kept : []), { valueString: typed }] : kept);
              }}
            />
          </div>
        ) : null}
      </fieldset>
    );
  }

  if (q.type === "reference" || q.type === "attachment") return null; // set by the app, not typed

  const kind: Record<string, [string, string]> = {
    string: ["text", "valueString"],
    text: ["textarea", "valueString"],
    integer: ["number", "valueInteger"],
    decimal: ["number", "valueDecimal"],
    date: ["date", "valueDate"],
    dateTime: ["datetime-local", "valueDateTime"],
    url: ["url", "valueUri"],
  };
  const [input, key] = kind[q.type] ?? ["text", "valueString"];
  const current = answers[0]?.[key];
  const change = (raw: string) => {
    if (raw === "") return set([]);
    if (key === "valueInteger") return set([{ valueInteger: Number.parseInt(raw, 10) }]);
    if (key === "valueDecimal") return set([{ valueDecimal: Number(raw) }]);
    set([{ [key]: raw }]);
  };
  return (
    <div class={`field${invalid ? " invalid" : ""}`}>
      <label for={id}>{text}</label>
      {error}
      {input === "textarea" ? (
        <textarea id={id} rows={3} value={current ?? ""} aria-required={q.required || undefined} aria-invalid={invalid || undefined} aria-describedby={described} onInput={(e) => change(e.currentTarget.value)} />
      ) : (
        <input
          id={id}
          type={input}
          step={key === "valueInteger" ? 1 : undefined}
          inputMode={key === "valueInteger" ? "numeric" : undefined}
          value={current ?? ""}
          aria-required={q.required || undefined}
          aria-invalid={invalid || undefined}
          aria-describedby={described}
          maxLength={typeof q.maxLength === "number" ? q.maxLength : undefined}
          onInput={(e) => change(e.currentTarget.value)}
        />
      )}
    </div>
  );
}

/** The answers of every answerValueSet the form uses, expanded by the server. */
export async function expandAll(
  items: QItem[],
  expand: (url: string) => Promise<Json[]>,
): Promise<Map<string, Json[]>> {
  const urls = new Set<string>();
  const walk = (qs: QItem[]) => qs.forEach((q) => (q.answerValueSet && urls.add(q.answerValueSet), walk(q.item ?? [])));
  walk(items);
  const map = new Map<string, Json[]>();
  await Promise.all(
    [...urls].map(async (url) => {
      map.set(url, await expand(url));
    }),
  );
  return map;
}
