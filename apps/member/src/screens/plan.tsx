import type { Api, Resource } from "../fhir";
import { useLoad } from "../hooks";
import { dayMonth, useI18n } from "../i18n";
import { Loading, Screen } from "../ui";

async function plans(api: Api): Promise<{ plans: Resource[]; goals: Map<string, string> }> {
  const found = await api.search(
    `CarePlan?patient=${api.patientId}&status=active&_include=CarePlan:goal`,
  );
  const goals = new Map<string, string>();
  for (const r of found)
    if (r.resourceType === "Goal") goals.set(`Goal/${r.id}`, r.description?.text ?? "");
  return { plans: found.filter((r) => r.resourceType === "CarePlan"), goals };
}

function text(concept: any): string {
  return concept?.text ?? concept?.coding?.[0]?.display ?? "";
}

export function Plan(props: { api: Api }) {
  const { t, lang } = useI18n();
  const state = useLoad(() => plans(props.api));
  const period = (p: any) =>
    [dayMonth(p?.start, lang), dayMonth(p?.end, lang)].filter(Boolean).join(" – ");
  return (
    <Screen title={t.navPlan} intro={t.planIntro}>
      <Loading state={state}>
        {({ plans, goals }) =>
          plans.length === 0 ? (
            <p>{t.planNone}</p>
          ) : (
            <>
              <p class="no-print">
                <button type="button" class="primary" onClick={() => window.print()}>
                  {t.planPrint}
                </button>
              </p>
              {plans.map((plan) => (
                <article key={plan.id} class="card plan">
                  <h2>{plan.title ?? t.navPlan}</h2>
                  {plan.description && <p>{plan.description}</p>}
                  {plan.period && (
                    <p class="meta">
                      {t.planPeriod}: {period(plan.period)}
                    </p>
                  )}
                  {(plan.goal ?? []).length > 0 && (
                    <>
                      <h3>{t.planGoals}</h3>
                      <ul>
                        {plan.goal.map((g: any) => (
                          <li key={g.reference}>{goals.get(g.reference) || g.display || ""}</li>
                        ))}
                      </ul>
                    </>
                  )}
                  {(plan.activity ?? []).length > 0 && (
                    <>
                      <h3>{t.planActivities}</h3>
                      <ul>
                        {plan.activity.map((a: any, i: number) => {
                          const d = a.detail ?? {};
                          const when = d.scheduledPeriod
                            ? period(d.scheduledPeriod)
                            : dayMonth(d.scheduledString ?? d.scheduledDateTime, lang);
                          return (
                            <li key={i}>
                              {d.description || text(d.code) || a.reference?.display || ""}
                              {when && (
                                <span class="meta">
                                  {" "}
                                  ({t.planDue}: {when})
                                </span>
                              )}
                            </li>
                          );
                        })}
                      </ul>
                    </>
                  )}
                </article>
              ))}
            </>
          )
        }
      </Loading>
    </Screen>
  );
}
