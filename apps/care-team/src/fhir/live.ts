// Live care-gap updates: a websocket Subscription (R5 Backport IG) on the care-gap topic,
// bound with $get-ws-binding-token (docs/subscriptions.md). The server narrows what it sends
// to what the signed-in user may see.
import type { Api } from "./client";
import type { Json, Resource } from "./types";

const TOPIC = "https://cmfhir.org/fhir/SubscriptionTopic/care-gap";
const BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";
const KEY = "cmfhir-care-team-subscription";

async function subscription(api: Api): Promise<string> {
  const known = sessionStorage.getItem(KEY);
  if (known) {
    try {
      const found = await api.read(`Subscription/${known}`);
      if (found.status !== "error" && found.status !== "off") return known;
    } catch {
      // gone or not ours: make a new one
    }
  }
  const end = new Date(Date.now() + 12 * 3600 * 1000).toISOString();
  const made = await api.create<Resource>({
    resourceType: "Subscription",
    status: "requested",
    reason: "Care-team console: care gaps of my members, live",
    criteria: TOPIC,
    end,
    channel: {
      type: "websocket",
      payload: "application/fhir+json",
      _payload: { extension: [{ url: `${BACKPORT}/backport-payload-content`, valueCode: "id-only" }] },
    },
  });
  sessionStorage.setItem(KEY, String(made.id));
  return String(made.id);
}

/** Calls `changed` for each care-gap notification until the returned function is called. */
export function watchGaps(api: Api, changed: () => void, state: (text: string) => void): () => void {
  let socket: WebSocket | undefined;
  let stopped = false;
  let retry: number | undefined;

  async function open(): Promise<void> {
    try {
      const id = await subscription(api);
      const binding = await api.json<Json>("GET", `Subscription/${id}/$get-ws-binding-token`);
      const param = (name: string) =>
        ((binding.parameter ?? []) as Json[]).find((p) => p.name === name);
      const token = String(param("token")?.valueString ?? "");
      const given = String(param("websocket-url")?.valueUrl ?? param("websocket-url")?.valueString ?? "/ws/subscriptions");
      const url = new URL(given, api.origin);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      if (stopped) return;
      socket = new WebSocket(url.toString());
      socket.onopen = () => socket?.send(`bind-with-token ${token}`);
      socket.onmessage = (message) => {
        try {
          const bundle = JSON.parse(String(message.data)) as Json;
          const status = bundle.entry?.[0]?.resource as Json | undefined;
          const type = ((status?.parameter ?? []) as Json[]).find((p) => p.name === "type")?.valueCode;
          if (type === "handshake") state("Live updates are on.");
          if (type === "event-notification") changed();
        } catch {
          // not a notification Bundle: ignore
        }
      };
      socket.onclose = () => {
        if (!stopped) {
          state("Live updates paused; reconnecting…");
          retry = window.setTimeout(open, 5000);
        }
      };
    } catch (error) {
      state(`Live updates are off: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  void open();
  return () => {
    stopped = true;
    if (retry) window.clearTimeout(retry);
    socket?.close();
  };
}
