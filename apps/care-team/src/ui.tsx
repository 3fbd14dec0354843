// Small shared pieces: loading state, messages, and a hook that loads data for a screen.
import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";

export type Load<T> = { data?: T; error?: string; loading: boolean; reload: () => void };

export function useLoad<T>(load: () => Promise<T>, deps: unknown[] = []): Load<T> {
  const [state, setState] = useState<{ data?: T; error?: string; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => live && setState({ data, loading: false }),
      (error: unknown) =>
        live &&
        setState((s) => ({
          data: s.data,
          error: (error instanceof Error ? error.message : String(error)) || "Something went wrong while loading.",
          loading: false,
        })),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

export function Loading(props: { what: string }) {
  return (
    <p class="muted" role="status">
      Loading {props.what}…
    </p>
  );
}

export function Problem(props: { text?: string }) {
  if (!props.text) return null;
  return (
    <p class="problem" role="alert">
      {props.text}
    </p>
  );
}

export function Done(props: { text?: string }) {
  return (
    <p class="done" role="status">
      {props.text ?? ""}
    </p>
  );
}

/** A screen: its heading takes focus when it opens, so a keyboard or screen-reader user knows where they are. */
export function Screen(props: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    heading.current?.focus();
    document.title = `${props.title} · Care team console`;
  }, [props.title]);
  return (
    <>
      <div class="screen-head">
        <h1 tabIndex={-1} ref={heading}>
          {props.title}
        </h1>
        {props.actions}
      </div>
      {props.children}
    </>
  );
}

export function Section(props: { title: string; id?: string; children: ComponentChildren }) {
  const id = props.id ?? props.title.toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return (
    <section aria-labelledby={`h-${id}`} class="card">
      <h2 id={`h-${id}`}>{props.title}</h2>
      {props.children}
    </section>
  );
}
