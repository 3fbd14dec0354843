import { render } from "preact";
import { App } from "./app";
import { connect } from "./fhir/client";
import "./style.css";

const root = document.getElementById("app")!;

connect()
  .then((api) => render(<App api={api} />, root))
  .catch((error: unknown) => {
    render(
      <main id="main">
        <h1>Could not sign you in</h1>
        <p role="alert">{error instanceof Error ? error.message : String(error)}</p>
        <p>
          <a href="/apps/care-team/">Try again</a>
        </p>
      </main>,
      root,
    );
  });
