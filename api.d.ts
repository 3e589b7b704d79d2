// Typed JS API of opencode-qwen-oauth: `require('opencode-qwen-oauth/api')` or `import ... from 'opencode-qwen-oauth/api'`.

/** Every field falls back to its environment variable, then to its default. */
export interface QwenOptions {
  /** Directory of `oauth_creds.json` (env `QWEN_HOME`, default `~/.qwen`). */
  qwenHome?: string
  /** OAuth server (env `QWEN_OAUTH_BASE_URL`, default `https://chat.qwen.ai`). */
  oauthBaseUrl?: string
  /** Version sent in `QwenCode/<version> (<platform>; <arch>)` (env `QWEN_CLI_VERSION`). */
  cliVersion?: string
  /** Minimum gap between request starts, machine-wide (ms, default 1000; env `QWEN_PACING_INTERVAL_MS`). */
  minIntervalMs?: number
  /** Random extra gap, uniform in [jitterMinMs, jitterMaxMs] (defaults 500 and 1500). */
  jitterMinMs?: number
  jitterMaxMs?: number
  /** Retries after 429 / 5xx / connection errors (default 3; env `QWEN_MAX_RETRIES`). */
  maxRetries?: number
  /** Cap on one wait before a retry (ms, default 60000; env `QWEN_MAX_WAIT_MS`). */
  maxWaitMs?: number
  /** Debug log to stderr with tokens redacted (env `QWEN_OAUTH_DEBUG=1`). */
  debug?: boolean
  /** Extra hosts a token may be sent to (exact host, or `.suffix`). */
  trustedHosts?: string[]
  /**
   * Send chat-completions bodies the way the Qwen Code CLI does: `metadata` (sessionId, promptId), `cache_control`
   * markers, `stream_options.include_usage`, `vl_high_resolution_images`, `preserve_thinking` (default true;
   * env `QWEN_ALIGN_BODY=0` turns it off). Off: OpenCode's body goes out byte for byte.
   */
  alignRequestBody?: boolean
  /** Requests a day; the plugin warns (toast) at 80 % and 95 % of it (default 1000; env `QWEN_DAILY_LIMIT`; 0: no warnings). */
  dailyLimit?: number
}

export interface Credentials {
  accessToken: string
  refreshToken: string
  tokenType: string
  /** Bare host from the server, e.g. `portal.qwen.ai`. */
  resourceUrl?: string | null
  /** Epoch milliseconds. */
  expiryDate: number
  /** `https://<resourceUrl>/v1`. */
  apiBaseUrl: string
}

/** Errors thrown by this API are `Error`s with a stable `code`. */
export interface QwenError extends Error {
  code:
    | 'E_CREDS_MISSING'
    | 'E_CREDS_INVALID'
    | 'E_CREDS_UNREADABLE'
    | 'E_CREDS_WRITE'
    | 'E_LOCK_TIMEOUT'
    | 'E_OAUTH_DENIED'
    | 'E_OAUTH_EXPIRED'
    | 'E_OAUTH_CANCELLED'
    | 'E_OAUTH_FAILED'
    | 'E_REFRESH_REJECTED'
    | 'E_TOKEN_REFUSED'
    | 'E_QUOTA_EXHAUSTED'
    | 'E_NETWORK'
    | 'E_BAD_RESPONSE'
    | 'E_UNTRUSTED_HOST'
    | 'E_ABORTED'
    | 'E_INVALID_ARG'
    | 'E_IO'
    | 'E_KEY_REFUSED'
    | 'E_KEY_NOT_ALLOWED'
    | 'E_KEY_INVALID'
}

export interface LoginSession {
  userCode: string
  verificationUri: string
  /** Open this in a browser: it carries the user code. */
  verificationUriComplete: string
  /** Seconds the code stays valid. */
  expiresIn: number
  /** Resolves with the saved credentials once approved; rejects with E_OAUTH_DENIED / E_OAUTH_EXPIRED / E_OAUTH_CANCELLED. */
  wait(): Promise<Credentials>
  cancel(): void
}

export function startLogin(options?: QwenOptions): Promise<LoginSession>
export function loadCredentials(options?: QwenOptions): Credentials | null
/**
 * Credentials with a valid access token: refreshed (once per machine, under the CLI's lock) when it expires within
 * 30 s, always with `force`. A token that needs nothing is answered without a trip to the addon's runtime.
 */
export function getValidCredentials(options?: QwenOptions, opts?: { force?: boolean }): Promise<Credentials>

export interface QwenClient {
  /** Drop-in `fetch`: adds the token and Qwen Code headers, paces, retries, streams; `init.signal` cancels. */
  fetch(input: string | URL | Request, init?: RequestInit): Promise<Response>
  credentialsGeneration(): number
  currentCredentials(): Credentials | null
  /** The quota view as of this process's latest request (no file access); null before the first request. */
  quota(): QuotaStatus | null
}

/**
 * The local quota view: requests sent from this machine (all processes, OAuth and API key alike), counted in
 * the pacing state file beside the credentials.
 */
export interface QuotaStatus {
  /** Requests in the current calendar minute (hh:mm:00–hh:mm:59). */
  minute: number
  /** Requests since 00:00 Beijing time (Asia/Shanghai, UTC+8). */
  today: number
  dailyLimit: number
  /** Next 00:00 Beijing time, epoch milliseconds. */
  dayResetsAt: number
  /** The last 429 answer, or null. */
  last429: {
    /** Epoch milliseconds. */
    at: number
    /** `quota`: the daily quota is used up; `rate_limit`: too many requests for now. */
    reason: 'rate_limit' | 'quota'
    /** The wait the server asked for, if it named one. */
    retryAfterMs?: number | null
  } | null
}

export interface QwenPaths {
  qwenHome: string
  /** `oauth_creds.json`, shared with the Qwen Code CLI. */
  credentials: string
  lock: string
  /** Pacing and quota state file. */
  state: string
}

/** The quota view from the state file (creates nothing), plus this process's requests not written yet. */
export function quotaStatus(options?: QwenOptions): QuotaStatus
/**
 * Write the requests this process counted in memory (pacing off) to the state file now; also done at exit.
 * Once this process has used the state file, a QWEN_HOME removed since is not created again: those counts are dropped.
 */
export function flushQuota(): void
export function qwenPaths(options?: QwenOptions): QwenPaths
/** Deletes `oauth_creds.json` under its lock (this logs the Qwen Code CLI out too); true when there was a file. */
export function removeCredentials(options?: QwenOptions): Promise<boolean>

/**
 * `transport`: which HTTP client moves the bytes. `native` (default under Node): the addon's own, on its I/O
 * thread. `runtime` (default under Bun): the runtime's `fetch`, every decision (token, headers, pacing,
 * retries, errors) still native. Env `QWEN_FETCH_TRANSPORT` overrides the default.
 */
export function createClient(options?: QwenOptions, auth?: { apiKey?: string; transport?: 'native' | 'runtime' }): QwenClient
export function apiBaseUrl(resourceUrl?: string | null): string
export function userAgent(cliVersion?: string): string
/** The `qwen-code` provider block for OpenCode's config, with `userBlock` merged over it key by key. */
export function providerConfig(userBlock?: Record<string, unknown>): Record<string, unknown>
export function liftError(err: unknown): unknown

/** An endpoint an API key can be used with, as the login's endpoint prompt lists it. */
export interface ApiKeyEndpoint {
  label: string
  /** Base URL, e.g. `https://coding.dashscope.aliyuncs.com/v1`. */
  value: string
  hint: string
}
/** Coding Plan China / international, DashScope Beijing / Singapore. */
export function apiKeyEndpoints(): ApiKeyEndpoint[]
/** null when the key's shape fits the endpoint (Coding Plan: `sk-sp-…`, DashScope: `sk-…`), else what to do. */
export function checkApiKey(key: string, endpoint: string): string | null
/** The China endpoint of the key's plan, for a stored key whose login names no endpoint. */
export function defaultApiKeyEndpoint(key: string): string

/** What OpenCode's login menu shows for this provider, and the texts the plugin's messages send users by. */
export interface LoginMethods {
  /** `Qwen Code` */
  providerName: string
  /** `Qwen Code (qwen.ai OAuth)` */
  oauthLabel: string
  /** The menu path to the OAuth login: `` `opencode auth login` → Qwen Code → Qwen Code (qwen.ai OAuth) `` */
  oauthLoginChoice: string
  /** `Qwen API key (Coding Plan / DashScope)` */
  apiKeyLabel: string
  /** The menu path to the API-key login, as every error that sends the user there quotes it. */
  apiKeyLoginChoice: string
  /** That Qwen ended the free OAuth tier on 2026-04-15 and its API refuses OAuth tokens since (E_TOKEN_REFUSED). */
  oauthServiceNote: string
}
/** The login methods' labels, the menu paths to them and the OAuth tier's note. */
export function loginMethods(): LoginMethods
