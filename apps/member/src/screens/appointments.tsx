import { type Api, today } from "../fhir";
import { useLoad } from "../hooks";
import { dateTime, useI18n } from "../i18n";
import { Loading, Screen } from "../ui";

export function Appointments(props: { api: Api }) {
  const { t, lang } = useI18n();
  const { api } = props;
  const state = useLoad(() =>
    api.search(`Appointment?patient=${api.patientId}&date=ge${today()}&_sort=date`),
  );
  return (
    <Screen title={t.navAppointments} intro={t.appointmentsIntro}>
      <Loading state={state}>
        {(found) => {
          const upcoming = found.filter((a) => a.status !== "cancelled" && a.status !== "entered-in-error");
          return upcoming.length === 0 ? (
            <p>{t.appointmentsNone}</p>
          ) : (
            <ul class="cards">
              {upcoming.map((a) => {
                const others = (a.participant ?? [])
                  .map((p: any) => p.actor)
                  .filter((actor: any) => actor && actor.reference !== api.patientRef)
                  .map((actor: any) => actor.display)
                  .filter(Boolean);
                return (
                  <li key={a.id} class="card">
                    <h2>{dateTime(a.start, lang)}</h2>
                    {a.description && <p>{a.description}</p>}
                    {others.length > 0 && (
                      <p class="meta">
                        {t.where}: {others.join(", ")}
                      </p>
                    )}
                  </li>
                );
              })}
            </ul>
          );
        }}
      </Loading>
    </Screen>
  );
}
