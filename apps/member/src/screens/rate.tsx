// Rate my last contact: the contact-satisfaction Questionnaire in a few taps. What to rate is
// the care team's pending survey request (a Task the console writes with each contact) when
// there is one, else the member's last completed contact; rating completes the request.
import { useState } from "preact/hooks";
import { type Api, CANONICAL, humanName, problem, type Resource } from "../fhir";
import { useLoad } from "../hooks";
import { dayMonth, useI18n } from "../i18n";
import { Loading, Notice, Screen } from "../ui";

const QUESTIONNAIRE = `${CANONICAL}contact-satisfaction`;
// The survey request's Task.code (docs/care-team-console.md).
const SURVEY_TASK = "http://hl7.org/fhir/uv/sdc/CodeSystem/temp|complete-questionnaire";
// The answer options as the Questionnaire spells them (what is stored), in its order.
const HELPFUL = ["Very helpful", "Somewhat helpful", "Not helpful"];

type Last = { contact: Resource; sender: string; rating?: number; task?: Resource } | null;

/** The rating already given to a contact, if any. */
async function ratingOf(api: Api, contact: Resource): Promise<number | undefined> {
  const [given] = await api.search(
    `QuestionnaireResponse?contact=Communication/${contact.id}&_count=1`,
    1,
  );
  const overall = given?.item?.find((i: any) => i.linkId === "overall");
  return overall?.answer?.[0]?.valueInteger;
}

function asksForSurvey(task: Resource): boolean {
  return (task.input ?? []).some((i: any) =>
    String(i.valueCanonical ?? "").split("|")[0] === QUESTIONNAIRE,
  );
}

/** The newest pending survey request about a contact not rated yet, with that contact. */
async function pendingRequest(api: Api): Promise<{ task: Resource; contact: Resource } | null> {
  const tasks = await api.search(
    `Task?patient=${api.patientRef}&status=requested&code=${encodeURIComponent(SURVEY_TASK)}` +
      "&_sort=-authored-on&_count=20",
    1,
  );
  for (const task of tasks) {
    const focus: string | undefined = task.focus?.reference;
    if (!asksForSurvey(task) || !focus?.startsWith("Communication/")) continue;
    const contact = await api.read(focus).catch(() => undefined);
    if (contact?.resourceType !== "Communication") continue;
    if ((await ratingOf(api, contact)) === undefined) return { task, contact };
  }
  return null;
}

async function lastContact(api: Api): Promise<Last> {
  const pending = await pendingRequest(api);
  let contact: Resource | undefined = pending?.contact;
  if (!contact) {
    [contact] = await api.search(
      `Communication?subject=${api.patientRef}&status=completed&_sort=-sent&_count=1`,
      1,
    );
  }
  if (!contact) return null;
  const senderRef: string | undefined = contact.sender?.reference;
  let sender: string = contact.sender?.display ?? "";
  if (!sender && senderRef?.startsWith("Practitioner/")) {
    sender = humanName(await api.read(senderRef).catch(() => undefined));
  }
  const rating = pending ? undefined : await ratingOf(api, contact);
  return { contact, sender, rating, task: pending?.task };
}

export function Rate(props: { api: Api }) {
  const { api } = props;
  const { t, lang } = useI18n();
  const state = useLoad(() => lastContact(api));
  const [rating, setRating] = useState<number>();
  const [helpful, setHelpful] = useState<number>();
  const [notice, setNotice] = useState<{ text: string; error?: boolean }>();

  async function send(event: Event, contact: Resource, task: Resource | undefined) {
    event.preventDefault();
    if (!rating) {
      setNotice({ text: t.ratePick, error: true });
      return;
    }
    const item: any[] = [
      { linkId: "contact", answer: [{ valueReference: { reference: `Communication/${contact.id}` } }] },
      { linkId: "overall", answer: [{ valueInteger: rating }] },
    ];
    if (helpful !== undefined) item.push({ linkId: "helpful", answer: [{ valueString: HELPFUL[helpful] }] });
    try {
      const response = await api.create({
        resourceType: "QuestionnaireResponse",
        questionnaire: QUESTIONNAIRE,
        status: "completed",
        subject: { reference: api.patientRef },
        author: { reference: api.patientRef },
        source: { reference: api.patientRef },
        authored: new Date().toISOString(),
        item,
      });
      if (task) {
        // The request is answered: completed, with the answers as its output.
        await api.update({
          ...task,
          status: "completed",
          lastModified: new Date().toISOString(),
          output: [
            {
              type: { text: "questionnaire-response" },
              valueReference: { reference: `QuestionnaireResponse/${response.id}` },
            },
          ],
        });
      }
      setNotice(undefined);
      state.reload();
    } catch (error) {
      setNotice({ text: `${t.failed} ${problem(error)}`, error: true });
    }
  }

  return (
    <Screen title={t.navRate} intro={t.rateIntro}>
      <Loading state={state}>
        {(last) => {
          if (!last) return <p>{t.rateNone}</p>;
          const { contact, task } = last;
          return (
            <>
              <p class="card">
                {task ? t.rateAsked : t.rateContact}: {dayMonth(contact.sent, lang)}
                {last.sender && ` ${t.by} ${last.sender}`}
              </p>
              {last.rating ? (
                <p class="notice" role="status">
                  {t.rateThanks} {last.rating} {t.rateOutOf}
                </p>
              ) : (
                <form class="stack" onSubmit={(e) => send(e, contact, task)}>
                  <fieldset class="taps">
                    <legend>{t.rateOverall}</legend>
                    {t.rateScale.map((label, i) => (
                      <label key={i} class={rating === i + 1 ? "tap chosen" : "tap"}>
                        <input
                          type="radio"
                          name="overall"
                          value={String(i + 1)}
                          checked={rating === i + 1}
                          onChange={() => setRating(i + 1)}
                        />
                        <span class="big">{i + 1}</span> {label}
                      </label>
                    ))}
                  </fieldset>
                  <fieldset class="taps">
                    <legend>{t.rateHelpful}</legend>
                    {t.rateHelpfulOptions.map((label, i) => (
                      <label key={i} class={helpful === i ? "tap chosen" : "tap"}>
                        <input
                          type="radio"
                          name="helpful"
                          value={HELPFUL[i]}
                          checked={helpful === i}
                          onChange={() => setHelpful(i)}
                        />
                        {label}
                      </label>
                    ))}
                  </fieldset>
                  <button type="submit" class="primary">
                    {t.rateSend}
                  </button>
                </form>
              )}
              <Notice text={notice?.text} error={notice?.error} />
            </>
          );
        }}
      </Loading>
    </Screen>
  );
}
