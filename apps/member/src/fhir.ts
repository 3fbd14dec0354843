// The one place the app talks to the FHIR API (through fhirclient, which holds the token).
import FHIR from "fhirclient";

export type Resource = { resourceType: string; id?: string; [key: string]: any };
export type SmartClient = Awaited<ReturnType<typeof FHIR.oauth2.ready>>;

export const CLIENT_ID = "cmfhir-member";
export const SCOPE = "openid fhirUser launch/patient offline_access patient/*.cruds";
export const CANONICAL = "https://cmfhir.org/fhir/Questionnaire/";

/** Send the browser to the sign-in page of this server's authorization server. */
export function signIn(): Promise<never> {
  const here = `${location.origin}/apps/member/`;
  return FHIR.oauth2.authorize({
    clientId: CLIENT_ID,
    scope: SCOPE,
    iss: `${location.origin}/fhir`,
    redirectUri: here,
  }) as Promise<never>;
}

export function ready(): Promise<SmartClient> {
  return FHIR.oauth2.ready();
}

export function signOut(): void {
  sessionStorage.clear();
  location.assign(`${location.origin}/apps/member/`);
}

export class Api {
  constructor(readonly client: SmartClient) {}

  get patientId(): string {
    const id = this.client.patient.id;
    if (!id) throw new Error("no patient in context");
    return String(id);
  }

  get patientRef(): string {
    return `Patient/${this.patientId}`;
  }

  /** Every resource of a search (following next links, at most `pages` pages). */
  async search(query: string, pages = 5): Promise<Resource[]> {
    const found = await this.client.request<Resource[]>(query, { pageLimit: pages, flat: true });
    return (Array.isArray(found) ? found : []).filter((r) => r && r.resourceType);
  }

  read(reference: string): Promise<Resource> {
    return this.client.request<Resource>(reference);
  }

  create(resource: Resource): Promise<Resource> {
    return this.client.create(resource as any) as Promise<Resource>;
  }

  update(resource: Resource): Promise<Resource> {
    return this.client.update(resource as any) as Promise<Resource>;
  }

  /** The pages of a request as they come (for $everything). */
  async pages(query: string): Promise<Resource[]> {
    const found = await this.client.request<Resource | Resource[]>(query, { pageLimit: 0 });
    return Array.isArray(found) ? found : [found];
  }
}

/** A person's name as one line ("Dana Smith"). */
export function humanName(resource: Resource | undefined): string {
  const name = resource?.name?.[0];
  if (!name) return "";
  if (name.text) return String(name.text);
  return [...(name.given ?? []), name.family ?? ""].join(" ").trim();
}

/** The message of a failed request, in plain words where the server gave some. */
export function problem(error: unknown): string {
  const anyError = error as any;
  const outcome = anyError?.response?.body ?? anyError?.body;
  const details = outcome?.issue?.map((i: any) => i.diagnostics || i.details?.text).filter(Boolean);
  if (details?.length) return details.join(" ");
  return anyError?.message ? String(anyError.message) : String(error);
}

export function today(): string {
  const now = new Date();
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
}
