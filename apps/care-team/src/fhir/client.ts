// The one way the console talks to cmfhir: fhirclient for the SMART launch and tokens, then
// plain fetch with the bearer token so that an OperationOutcome's message reaches the screen.
import FHIR from "fhirclient";
import type Client from "fhirclient/lib/Client";
import type { Bundle, Json, Resource } from "./types";

export const CLIENT_ID = "cmfhir-care-team";
export const SCOPE = "openid fhirUser launch/patient offline_access user/*.cruds";

export class FhirError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** Start the standalone launch (leaves the page) or finish it (returns the connection). */
export async function connect(): Promise<Api> {
  const origin = window.location.origin;
  const params = new URLSearchParams(window.location.search);
  const returning = params.has("code") || params.has("error") || sessionStorage.getItem("SMART_KEY");
  if (!returning) {
    await FHIR.oauth2.authorize({
      clientId: CLIENT_ID,
      scope: SCOPE,
      iss: `${origin}/fhir`,
      redirectUri: `${origin}/apps/care-team/`,
    });
    return new Promise<Api>(() => undefined); // the browser is leaving
  }
  const client = await FHIR.oauth2.ready();
  return new Api(client);
}

export class Api {
  constructor(private readonly client: Client) {}

  get base(): string {
    return String(this.client.state.serverUrl).replace(/\/$/, "");
  }

  get origin(): string {
    return this.base.replace(/\/fhir$/, "");
  }

  /** "Practitioner/ID" of the signed-in person, or null. */
  get user(): string | null {
    return this.client.getFhirUser();
  }

  async token(): Promise<string> {
    await this.client.refreshIfNeeded();
    return String(this.client.state.tokenResponse?.access_token ?? "");
  }

  async raw(method: string, url: string, body?: unknown, accept = "application/fhir+json"): Promise<Response> {
    const target = url.startsWith("http") ? url : url.startsWith("/") ? this.origin + url : `${this.base}/${url}`;
    const headers: Record<string, string> = {
      Authorization: `Bearer ${await this.token()}`,
      Accept: accept,
    };
    if (body !== undefined) headers["Content-Type"] = "application/fhir+json";
    const response = await fetch(target, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) throw new FhirError(await problem(response), response.status);
    return response;
  }

  async json<T = Json>(method: string, url: string, body?: unknown): Promise<T> {
    const response = await this.raw(method, url, body);
    return (await response.json()) as T;
  }

  read<T extends Resource = Resource>(reference: string): Promise<T> {
    return this.json<T>("GET", reference);
  }

  create<T extends Resource>(resource: T): Promise<T> {
    return this.json<T>("POST", resource.resourceType, resource);
  }

  update<T extends Resource>(resource: T): Promise<T> {
    return this.json<T>("PUT", `${resource.resourceType}/${resource.id}`, resource);
  }

  /** Every match of a search, following `next` links (at most `limit` resources). */
  async search(query: string, limit = 1000): Promise<Resource[]> {
    const found: Resource[] = [];
    let url: string | undefined = query;
    while (url && found.length < limit) {
      const bundle: Bundle = await this.json<Bundle>("GET", url);
      for (const entry of bundle.entry ?? []) if (entry.resource) found.push(entry.resource);
      url = bundle.link?.find((l) => l.relation === "next")?.url;
    }
    return found;
  }
}

async function problem(response: Response): Promise<string> {
  try {
    const outcome = (await response.json()) as Json;
    const issues = (outcome.issue ?? []) as Json[];
    const text = issues
      .map((i) => [i.diagnostics ?? i.details?.text, (i.expression ?? []).join(", ")].filter(Boolean).join(" at "))
      .filter(Boolean)
      .join("; ");
    if (text) return text;
  } catch {
    // not JSON: fall through to the status line
  }
  if (response.status === 403) return "Your account may not do this.";
  return `The server answered ${response.status} ${response.statusText}`;
}
