// The HTTP transport: JSON in and out, the login token, and the server's `detail` as the
// error message a person reads.

/**
 * The API's path: `api/v1` beside the page, so the client works wherever it is mounted (`/` under
 * `slidelabel serve`, `/slidelabel/` in the Digital Slide Archive's Girder plugin).
 */
export function apiPrefix(baseURI: string | undefined): string {
  return baseURI ? new URL('api/v1', baseURI).pathname : '/api/v1';
}

export const API_PREFIX = apiPrefix(globalThis.document?.baseURI);

/** The token of the Girder session the page was opened from (the Girder plugin), if any. */
export function girderToken(cookie: string | undefined): string | null {
  const entry = (cookie ?? '').split(';').map((part) => part.trim()).find((part) => part.startsWith('girderToken='));
  return entry ? decodeURIComponent(entry.slice('girderToken='.length)) || null : null;
}

/** A refusal by the server, with its status and its own words (`detail`). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The message of a FastAPI error body: a string `detail`, or the first validation error. */
export function detailOf(body: unknown, status: number): string {
  const detail = (body as { detail?: unknown } | null)?.detail;
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail) && detail.length > 0) {
    const first = detail[0] as { loc?: unknown[]; msg?: string };
    const where = (first.loc ?? []).filter((part) => part !== 'body').join('.');
    return where ? `${where}: ${first.msg}` : String(first.msg);
  }
  return `the server answered ${status}`;
}

export type Query = Record<string, string | number | boolean | undefined | null>;

export function queryString(query: Query | undefined): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null) params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}

const TOKEN_KEY = 'slidelabel.token';

/** Sends requests under /api/v1 with the login token; keeps the token in localStorage. */
export class ApiClient {
  private token: string | null;

  constructor(
    private readonly storage: Storage | null = globalThis.localStorage ?? null,
    cookie: string | undefined = globalThis.document?.cookie,
  ) {
    // Under Girder, its login is the login: no second one (the plugin accepts Girder tokens).
    this.token = storage?.getItem(TOKEN_KEY) ?? girderToken(cookie);
  }

  get loggedIn(): boolean {
    return this.token !== null;
  }

  setToken(token: string | null): void {
    this.token = token;
    if (token === null) this.storage?.removeItem(TOKEN_KEY);
    else this.storage?.setItem(TOKEN_KEY, token);
  }

  /** A URL the browser loads itself (<img>, downloads), which carries the token as `?token=`. */
  url(path: string, query?: Query): string {
    return API_PREFIX + path + queryString({ ...query, token: this.token });
  }

  /** `signal`: aborts the request (it then rejects with the fetch's AbortError, not an ApiError). */
  async request(method: string, path: string, body?: unknown, query?: Query, signal?: AbortSignal): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let payload: BodyInit | undefined;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    let response: Response;
    try {
      response = await fetch(API_PREFIX + path + queryString(query), { method, headers, body: payload, signal });
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new ApiError(0, 'cannot reach the server: is `slidelabel serve` running?');
    }
    if (!response.ok) {
      const error = await response.json().catch(() => null);
      if (response.status === 401) this.setToken(null);
      throw new ApiError(response.status, detailOf(error, response.status));
    }
    return response;
  }

  async json<T>(method: string, path: string, body?: unknown, query?: Query, signal?: AbortSignal): Promise<T> {
    const response = await this.request(method, path, body, query, signal);
    return (response.status === 204 ? undefined : await response.json()) as T;
  }

  async bytes(path: string, query?: Query): Promise<ArrayBuffer> {
    return (await this.request('GET', path, undefined, query)).arrayBuffer();
  }

  /**
   * A category id per superpixel id (0: none) from `labels.bin`, `predictions.bin` or a gallery's
   * `overlay.bin`: little-endian uint32 (ids are global and never reused, so a long-lived server
   * passes uint16's 65,535; browsers are little-endian).
   */
  async categoryIds(path: string, query?: Query): Promise<Uint32Array> {
    return new Uint32Array(await this.bytes(path, query));
  }
}
