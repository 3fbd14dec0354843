// The Questionnaires' own texts in the member's language. cmfhir's Questionnaires carry
// their Spanish in the FHIR translation extension
// (http://hl7.org/fhir/StructureDefinition/translation) on the primitive: `_text`, `_title`,
// an answerOption's `_valueString` or its coding's `_display`. Only what is shown changes:
// the answers stored are the Questionnaire's own values.
import type { Lang } from "./i18n";

export const TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation";

/** `owner[field]` in `lang`: its translation when there is one (language tags compared by
 *  their primary subtag, so "es" matches "es-US"), else as written. */
export function translated(owner: any, field: string, lang: Lang): string | undefined {
  if (!owner) return undefined;
  const written = typeof owner[field] === "string" ? (owner[field] as string) : undefined;
  if (lang === "en") return written;
  for (const ext of owner[`_${field}`]?.extension ?? []) {
    if (ext?.url !== TRANSLATION) continue;
    const parts: any[] = ext.extension ?? [];
    const tag = String(parts.find((p) => p.url === "lang")?.valueCode ?? "").toLowerCase();
    const content = parts.find((p) => p.url === "content")?.valueString;
    if (tag.split("-")[0] === lang && typeof content === "string") return content;
  }
  return written;
}
