import { useEffect, useState } from "preact/hooks";
import { type Api, humanName, signOut } from "./fhir";
import { useLoad } from "./hooks";
import { I18n, initialLang, MESSAGES, saveLang, type Lang, type Messages } from "./i18n";
import { Access } from "./screens/access";
import { Answers } from "./screens/answers";
import { Appointments } from "./screens/appointments";
import { Goals } from "./screens/goals";
import { Plan } from "./screens/plan";
import { Rate } from "./screens/rate";
import { Record } from "./screens/record";
import { Team } from "./screens/team";

type Route = {
  path: string;
  label: (t: Messages) => string;
  screen: (props: { api: Api }) => preact.JSX.Element;
};

export const ROUTES: Route[] = [
  { path: "team", label: (t) => t.navTeam, screen: Team },
  { path: "goals", label: (t) => t.navGoals, screen: Goals },
  { path: "plan", label: (t) => t.navPlan, screen: Plan },
  { path: "appointments", label: (t) => t.navAppointments, screen: Appointments },
  { path: "about-me", label: (t) => t.navAnswers, screen: Answers },
  { path: "rate", label: (t) => t.navRate, screen: Rate },
  { path: "access", label: (t) => t.navAccess, screen: Access },
  { path: "record", label: (t) => t.navRecord, screen: Record },
];

function currentPath(): string {
  const path = location.hash.replace(/^#\/?/, "");
  return ROUTES.some((r) => r.path === path) ? path : "team";
}

export function LanguageSwitch(props: { lang: Lang; onChange: (lang: Lang) => void }) {
  const t = MESSAGES[props.lang];
  return (
    <div class="language">
      <label for="language">{t.language}</label>
      <select
        id="language"
        value={props.lang}
        onChange={(e) => props.onChange((e.currentTarget as HTMLSelectElement).value as Lang)}
      >
        <option value="en" lang="en">
          English
        </option>
        <option value="es" lang="es">
          Español
        </option>
      </select>
    </div>
  );
}

export function App(props: { api: Api }) {
  const [lang, setLang] = useState<Lang>(initialLang());
  const [path, setPath] = useState(currentPath());
  const t = MESSAGES[lang];
  const patient = useLoad(() => props.api.read(props.api.patientRef));
  saveLang(lang);

  useEffect(() => {
    const follow = () => {
      setPath(currentPath());
      // Where a screen changes, the reader is taken to its title.
      requestAnimationFrame(() => document.getElementById("screen-title")?.focus());
    };
    addEventListener("hashchange", follow);
    return () => removeEventListener("hashchange", follow);
  }, []);

  const route = ROUTES.find((r) => r.path === path) ?? ROUTES[0];
  const Screen = route.screen;
  const name = humanName(patient.data);
  return (
    <I18n.Provider value={{ lang, t }}>
      <a class="skip" href="#main" onClick={(e) => {
        e.preventDefault();
        document.getElementById("screen-title")?.focus();
      }}>
        {t.skip}
      </a>
      <header class="top">
        <p class="brand">
          {t.appName}
          {name && <span class="who"> · {t.hello}, {name}</span>}
        </p>
        <LanguageSwitch lang={lang} onChange={setLang} />
        <button type="button" class="link" onClick={signOut}>
          {t.signOut}
        </button>
      </header>
      <nav aria-label={t.menu}>
        <ul>
          {ROUTES.map((r) => (
            <li key={r.path}>
              <a href={`#/${r.path}`} aria-current={r.path === path ? "page" : undefined}>
                {r.label(t)}
              </a>
            </li>
          ))}
        </ul>
      </nav>
      <main id="main">
        <Screen key={path} api={props.api} />
      </main>
    </I18n.Provider>
  );
}
