import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./generated/openapi.js";

/** Every REST schema by name, e.g. `Schemas["Message"]`. */
export type Schemas = components["schemas"];
export type Problem = Schemas["Problem"];
export type RestClient = Client<paths>;

/** Returns a valid access token (JWT); called before each request and each (re)connect. */
export type TokenProvider = () => string | Promise<string>;

export interface RestOptions {
  /** The API's base URL, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** `null` for calls without credentials (a public channel's history). */
  token: TokenProvider | null;
  /** Defaults to the global `fetch`. */
  fetch?: typeof globalThis.fetch;
}

/** A typed client for every REST operation (openapi-fetch over the generated `paths`). */
export function createRestClient(options: RestOptions): RestClient {
  const client = createClient<paths>({
    baseUrl: options.baseUrl.replace(/\/+$/, ""),
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  client.use({
    async onRequest({ request }) {
      if (options.token) {
        request.headers.set("Authorization", `Bearer ${await options.token()}`);
      }
      return request;
    },
  });
  return client;
}

/** A REST call answered with an RFC 7807 problem. */
export class ProblemError extends Error {
  readonly status: number;
  readonly problem: Problem | undefined;

  constructor(status: number, problem: Problem | undefined) {
    super(problem ? `${status} ${problem.code}: ${problem.detail}` : `HTTP ${status}`);
    this.name = "ProblemError";
    this.status = status;
    this.problem = problem;
  }
}

interface FetchResult {
  data?: unknown;
  error?: unknown;
  response: Response;
}

/** The response body of a successful call, or a thrown [`ProblemError`]. */
export async function unwrap<R extends FetchResult>(pending: Promise<R>): Promise<Exclude<R["data"], undefined>> {
  const { data, error, response } = await pending;
  if (!response.ok) {
    throw new ProblemError(response.status, isProblem(error) ? error : undefined);
  }
  return data as Exclude<R["data"], undefined>;
}

function isProblem(value: unknown): value is Problem {
  return typeof value === "object" && value !== null && "code" in value && "status" in value;
}
