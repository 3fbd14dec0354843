// Log a contact: a Communication (docs/care-management.md, "Contacts"); a completed one also
// asks the member for feedback with a Task the member app finds: "complete the
// contact-satisfaction questionnaire about this Communication".
import { useState } from "preact/hooks";
import type { Api } from "../fhir/client";
import { PARTICIPATION_MODE, QUESTIONNAIRE, type Resource } from "../fhir/types";
import { Done, Problem } from "../ui";
import type { Member } from "./data";

const MEDIA: [string, string][] = [
  ["PHONE", "Phone call"],
  ["FACE", "In person"],
  ["VIDEOCONF", "Video call"],
  ["WRITTEN", "Letter or written message"],
  ["EMAILWRIT", "Email"],
];

export const SURVEY_TASK_CODE = {
  system: "http://hl7.org/fhir/uv/sdc/CodeSystem/temp",
  code: "complete-questionnaire",
  display: "Complete questionnaire",
};

export function surveyTask(member: string, contact: Resource, user: string | null): Resource {
  const task: Resource = {
    resourceType: "Task",
    status: "requested",
    intent: "order",
    code: { coding: [SURVEY_TASK_CODE], text: "Tell us how your contact went" },
    description: "A few quick questions about your last contact with your care team.",
    focus: { reference: `Communication/${contact.id}` },
    for: { reference: member },
    owner: { reference: member },
    authoredOn: new Date().toISOString(),
    input: [
      {
        type: { text: "questionnaire" },
        valueCanonical: QUESTIONNAIRE.satisfaction,
      },
    ],
  };
  if (user) task.requester = { reference: user };
  return task;
}

export function ContactForm(props: { api: Api; m: Member; reload: () => void }) {
  const { api, m } = props;
  const [medium, setMedium] = useState("PHONE");
  const [reached, setReached] = useState(true);
  const [note, setNote] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const [done, setDone] = useState<string>();

  async function submit(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    setDone(undefined);
    const member = `Patient/${m.patient.id}`;
    const display = MEDIA.find(([c]) => c === medium)?.[1];
    const contact: Resource = {
      resourceType: "Communication",
      status: reached ? "completed" : "not-done",
      subject: { reference: member },
      recipient: [{ reference: member }],
      sent: new Date().toISOString(),
      medium: [{ coding: [{ system: PARTICIPATION_MODE, code: medium, display }], text: display }],
    };
    if (!reached) contact.statusReason = { text: "Did not reach the member" };
    if (api.user) contact.sender = { reference: api.user };
    if (note.trim()) contact.payload = [{ contentString: note.trim() }];
    try {
      const saved = await api.create(contact);
      if (reached) await api.create(surveyTask(member, saved, api.user));
      setDone(reached ? "Contact logged. The member will be asked how it went." : "Attempt logged.");
      setNote("");
      props.reload();
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form onSubmit={submit} aria-label="Log a contact" class="contact-form">
      <div class="field">
        <label for="contact-medium">How</label>
        <select id="contact-medium" value={medium} onChange={(e) => setMedium(e.currentTarget.value)}>
          {MEDIA.map(([code, text]) => (
            <option key={code} value={code}>
              {text}
            </option>
          ))}
        </select>
      </div>
      <div class="field check">
        <input id="contact-missed" type="checkbox" checked={!reached} onChange={(e) => setReached(!e.currentTarget.checked)} />
        <label for="contact-missed">I tried but did not reach them</label>
      </div>
      <div class="field">
        <label for="contact-note">Note</label>
        <textarea id="contact-note" rows={3} value={note} onInput={(e) => setNote(e.currentTarget.value)} />
      </div>
      <button type="submit" disabled={busy}>
        {busy ? "Saving…" : "Log the contact"}
      </button>
      <Problem text={error} />
      <Done text={done} />
    </form>
  );
}
