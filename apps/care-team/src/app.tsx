// The console's frame: a header with navigation, and the screen the address (#/...) names.
import { useEffect, useState } from "preact/hooks";
import type { Api } from "./fhir/client";
import { humanName } from "./fhir/format";
import { useLoad } from "./ui";
import { QuestionnaireScreen } from "./forms/screen";
import { MemberPage } from "./member/page";
import { Supervisor } from "./supervisor/view";
import { Worklist } from "./worklist/view";

function useRoute(): string[] {
  const read = () => (window.location.hash.replace(/^#\/?/, "") || "worklist").split("/").map(decodeURIComponent);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const changed = () => setRoute(read());
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  return route;
}

export function App(props: { api: Api }) {
  const { api } = props;
  const route = useRoute();
  const me = useLoad(async () => (api.user ? humanName(await api.read(api.user)) : ""), []);
  const [page, id, , form] = route;
  let screen;
  if (page === "member" && id && form) screen = <QuestionnaireScreen api={api} patientId={id} which={form} />;
  else if (page === "member" && id) screen = <MemberPage api={api} patientId={id} />;
  else if (page === "supervisor") screen = <Supervisor api={api} />;
  else screen = <Worklist api={api} />;
  const current = (name: string) => (page === name || (name === "worklist" && page !== "supervisor" && page !== "member") ? "page" : undefined);
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById("main")?.focus(); }}>
        Skip to content
      </a>
      <header class="top">
        <p class="brand">Care team console</p>
        <nav aria-label="Main">
          <ul>
            <li>
              <a href="#/worklist" aria-current={current("worklist")}>
                My worklist
              </a>
            </li>
            <li>
              <a href="#/supervisor" aria-current={current("supervisor")}>
                Supervisor view
              </a>
            </li>
          </ul>
        </nav>
        <p class="who">Signed in as {me.data || api.user || "a user with no FHIR identity"}</p>
      </header>
      <main id="main" tabIndex={-1}>
        {screen}
      </main>
    </>
  );
}
