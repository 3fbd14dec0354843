// The language a Questionnaire is shown in. Its texts carry translations in the FHIR
// translation extension (http://hl7.org/fhir/StructureDefinition/translation) on the
// primitive: `_text`, `_title`, an answerOption's `_valueString` or its coding's `_display`.
// What is sent stays the Questionnaire's own value: only what is shown changes.
import type { Json } from "../fhir/types";

export const TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation";
export type Lang = "en" | "es";
export const LANGS: [Lang, string][] = [
  ["en", "English"],
  ["es", "Español"],
];
const KEY = "cmfhir-care-team-form-lang";

/** `owner[field]` in `lang`: its translation when one is given (language tags compared by
 *  their primary subtag, so "es" matches "es-US"), else the text as written. */
export function translated(owner: Json | undefined, field: string, lang: Lang): string | undefined {
  if (!owner) return undefined;
  const written = owner[field];
  const base = typeof written === "string" ? written : undefined;
  if (lang === "en") return base;
  for (const ext of (owner[`_${field}`]?.extension ?? []) as Json[]) {
    if (ext.url !== TRANSLATION) continue;
    const parts = (ext.extension ?? []) as Json[];
    const tag = String(parts.find((p) => p.url === "lang")?.valueCode ?? "").toLowerCase();
    const content = parts.find((p) => p.url === "content")?.valueString;
    if (tag.split("-")[0] === lang && typeof content === "string") return content;
  }
  return base;
}

/** The label of an answer option: a coding's display or the value, translated. */
export function optionLabel(answer: Json, lang: Lang): string {
  if (answer.valueCoding) return String(translated(answer.valueCoding, "display", lang) ?? answer.valueCoding.code);
  const key = Object.keys(answer).find((k) => k.startsWith("value"));
  if (!key) return "";
  return typeof answer[key] === "string" ? String(translated(answer, key, lang)) : String(answer[key]);
}

/** The words the form itself shows around the Questionnaire's texts. */
export const WORDS: Record<Lang, Record<string, string>> = {
  en: {
    yes: "Yes",
    no: "No",
    required: "(required)",
    own: "Or in your own words",
    answer: "Please answer this question.",
    add: "Add another:",
    remove: "Remove",
  },
  es: {
    yes: "Sí",
    no: "No",
    required: "(obligatoria)",
    own: "O en sus propias palabras",
    answer: "Por favor conteste esta pregunta.",
    add: "Agregar otro:",
    remove: "Quitar",
  },
};

export function initialLang(): Lang {
  const saved = localStorage.getItem(KEY);
  if (saved === "en" || saved === "es") return saved;
  return navigator.language?.toLowerCase().startsWith("es") ? "es" : "en";
}

export function saveLang(lang: Lang): void {
  localStorage.setItem(KEY, lang);
}
