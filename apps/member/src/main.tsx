import { render } from "preact";
import { App } from "./app";
import { Api, CLIENT_ID, ready } from "./fhir";
import { SignIn } from "./signin";
import "./style.css";

const root = document.getElementById("root") as HTMLElement;
const query = new URLSearchParams(location.search);

async function start(): Promise<void> {
  // Back from the authorize page (code or error), or a session fhirclient keeps: go on.
  const returning = query.has("code") || query.has("error") || sessionStorage.getItem("SMART_KEY");
  if (!returning) {
    render(<SignIn failed={false} />, root);
    return;
  }
  try {
    const client = await ready();
    // The care-team console on the same origin keeps its session in the same storage.
    if (client.state.clientId !== CLIENT_ID) throw new Error("another app's session");
    render(<App api={new Api(client)} />, root);
  } catch {
    sessionStorage.clear();
    history.replaceState(null, "", location.pathname + location.hash);
    render(<SignIn failed={true} />, root);
  }
}

void start();
