// Small shared pieces: loading and error states, status messages.
import type { ComponentChildren } from "preact";
import { useI18n } from "./i18n";
import type { Loaded } from "./hooks";

export function Screen(props: { title: string; intro?: string; children: ComponentChildren }) {
  return (
    <section aria-labelledby="screen-title">
      <h1 id="screen-title" tabIndex={-1}>
        {props.title}
      </h1>
      {props.intro && <p class="intro">{props.intro}</p>}
      {props.children}
    </section>
  );
}

export function Loading<T>(props: { state: Loaded<T>; children: (data: T) => ComponentChildren }) {
  const { t } = useI18n();
  if (props.state.error)
    return (
      <p role="alert" class="error">
        {t.failed} {props.state.error}
      </p>
    );
  if (props.state.data === undefined)
    return (
      <p role="status" class="loading">
        {t.loading}
      </p>
    );
  return <>{props.children(props.state.data)}</>;
}

export function Notice(props: { text?: string; error?: boolean }) {
  // Always in the page, so screen readers announce what is put in it.
  return (
    <p role={props.error ? "alert" : "status"} class={props.error ? "error" : "notice"}>
      {props.text ?? ""}
    </p>
  );
}
