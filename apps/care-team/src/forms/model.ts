// The state of a Questionnaire being filled, kept in the QuestionnaireResponse's own shape,
// and the rules a renderer needs: enableWhen, required items, and the response to send.
import type { Json } from "../fhir/types";
import { translated, type Lang } from "./language";

export interface QItem extends Json {
  linkId: string;
  type: string;
  text?: string;
  required?: boolean;
  repeats?: boolean;
  item?: QItem[];
  enableWhen?: Json[];
  enableBehavior?: "all" | "any";
  answerOption?: Json[];
  answerValueSet?: string;
}

export interface RItem {
  linkId: string;
  text?: string;
  answer?: Json[];
  item?: RItem[];
}

/** The answer's value, whatever its type (valueString, valueCoding, ...). */
export function valueOf(answer: Json): [string, unknown] | undefined {
  const key = Object.keys(answer).find((k) => k.startsWith("value"));
  return key ? [key, answer[key]] : undefined;
}

export function sameAnswer(a: Json, b: Json): boolean {
  const x = valueOf(a);
  const y = valueOf(b);
  if (!x || !y) return false;
  if (x[0] === "valueCoding" && y[0] === "valueCoding") {
    const p = x[1] as Json;
    const q = y[1] as Json;
    return p.code === q.code && (p.system ?? "") === (q.system ?? "");
  }
  return x[0] === y[0] && JSON.stringify(x[1]) === JSON.stringify(y[1]);
}

/** A fresh response item for a Questionnaire item (groups get their children). */
export function blank(q: QItem): RItem {
  if (q.type === "group") return { linkId: q.linkId, text: q.text, item: (q.item ?? []).map(blankList).flat() };
  return { linkId: q.linkId, text: q.text, answer: [] };
}

function blankList(q: QItem): RItem[] {
  if (q.type === "display") return [];
  return [blank(q)];
}

export function blankResponse(items: QItem[]): RItem[] {
  return items.map(blankList).flat();
}

/** Every response item with this linkId, anywhere in the tree (with its ancestors). */
function answersOf(root: RItem[], linkId: string): Json[] {
  const found: Json[] = [];
  const walk = (items: RItem[]) => {
    for (const item of items) {
      if (item.linkId === linkId) found.push(...(item.answer ?? []));
      walk(item.item ?? []);
      for (const a of item.answer ?? []) walk((a.item ?? []) as RItem[]);
    }
  };
  walk(root);
  return found;
}

function test(condition: Json, answers: Json[]): boolean {
  const op = String(condition.operator);
  if (op === "exists") return (answers.length > 0) === Boolean(condition.answerBoolean);
  const expected = Object.keys(condition).find((k) => k.startsWith("answer"));
  if (!expected) return false;
  const wanted: Json = { [expected.replace(/^answer/, "value")]: condition[expected] };
  const hit = answers.some((a) => sameAnswer(a, wanted));
  if (op === "=") return hit;
  if (op === "!=") return answers.length > 0 && !hit;
  const [, target] = valueOf(wanted) ?? [];
  return answers.some((a) => {
    const [, v] = valueOf(a) ?? [];
    if (typeof v !== typeof target) return false;
    const x = v as number | string;
    const y = target as number | string;
    return op === ">" ? x > y : op === "<" ? x < y : op === ">=" ? x >= y : op === "<=" ? x <= y : false;
  });
}

export function enabled(q: QItem, root: RItem[]): boolean {
  const conditions = q.enableWhen ?? [];
  if (conditions.length === 0) return true;
  const results = conditions.map((c) => test(c, answersOf(root, String(c.question))));
  return q.enableBehavior === "any" ? results.some(Boolean) : results.every(Boolean);
}

function hasAnswer(r: RItem): boolean {
  return (r.answer ?? []).some((a) => {
    const v = valueOf(a);
    return v !== undefined && v[1] !== "" && v[1] !== undefined && v[1] !== null;
  });
}

/** The questions that are enabled, required and unanswered: [linkId path, text]. */
export function missing(qs: QItem[], rs: RItem[], root: RItem[], where = "", lang: Lang = "en"): [string, string][] {
  const out: [string, string][] = [];
  for (const q of qs) {
    if (q.type === "display" || !enabled(q, root)) continue;
    const mine = rs.filter((r) => r.linkId === q.linkId);
    if (q.type === "group") {
      mine.forEach((r, i) => out.push(...missing(q.item ?? [], r.item ?? [], root, `${where}${q.linkId}.${i}/`, lang)));
    } else if (q.required && !mine.some(hasAnswer)) {
      out.push([`${where}${q.linkId}`, translated(q, "text", lang) ?? q.linkId]);
    }
  }
  return out;
}

/** The items to send: disabled and empty items left out, in the Questionnaire's order. */
export function prune(qs: QItem[], rs: RItem[], root: RItem[]): RItem[] {
  const out: RItem[] = [];
  for (const q of qs) {
    if (q.type === "display" || !enabled(q, root)) continue;
    for (const r of rs.filter((x) => x.linkId === q.linkId)) {
      if (q.type === "group") {
        const children = prune(q.item ?? [], r.item ?? [], root);
        if (children.length) out.push({ linkId: r.linkId, text: r.text, item: children });
      } else {
        const answers = (r.answer ?? []).filter((a) => {
          const v = valueOf(a);
          return v !== undefined && v[1] !== "" && v[1] !== undefined && v[1] !== null;
        });
        if (answers.length) out.push({ linkId: r.linkId, text: r.text, answer: answers });
      }
    }
  }
  return out;
}
