// The OpenCode plugin: wiring from OpenCode's hooks to the native core (through ./api.cjs). Every export
// is a plugin function, as OpenCode requires; the API for other tools lives at `opencode-qwen-oauth/api`.
import { createRequire } from 'node:module'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'

const require = createRequire(import.meta.url)
const api = require('./api.cjs')

const PROVIDER_ID = 'qwen-code'
// OpenCode's own placeholder for OAuth providers: the real token (or key) is set per request by our fetch.
const PLACEHOLDER_API_KEY = 'opencode-oauth-dummy-key'
// Labels, menu paths and the OAuth tier's note: the same texts Rust's error messages quote.
const LOGIN = api.loginMethods()

/** @type {import('@opencode-ai/plugin').Plugin} */
export const QwenCodePlugin = async (input, pluginOptions) => {
  const options = pluginOptions ?? {}
  const debug = (msg) => {
    if (options.debug || !['', '0', 'false'].includes(process.env.QWEN_OAUTH_DEBUG ?? '')) {
      console.error(`[opencode-qwen-oauth] ${msg}`)
    }
  }
  await adoptQwenCliLogin(input, options, debug)
  const notify = createNotifier(input, debug)

  return {
    config: async (cfg) => {
      cfg.provider ??= {}
      cfg.provider[PROVIDER_ID] = api.providerConfig(cfg.provider[PROVIDER_ID])
    },

    auth: {
      provider: PROVIDER_ID,
      loader: async (getAuth, provider) => {
        const auth = await getAuth()
        if (auth?.type === 'api') return apiKeyLoader(auth, provider, options, notify, debug)
        if (!auth || auth.type !== 'oauth') return {}
        const client = api.createClient(options)
        const creds = currentOrNull(client, debug)
        const userBaseURL = provider?.options?.baseURL
        let loaderBaseURL = userBaseURL || api.apiBaseUrl(creds?.resourceUrl ?? auth.enterpriseUrl)
        let generation = client.credentialsGeneration()

        // Mirror refreshed tokens into OpenCode's store so the two never diverge.
        const mirror = async () => {
          const now = client.credentialsGeneration()
          if (now === generation) return
          generation = now
          const c = currentOrNull(client, debug)
          if (!c) return
          try {
            await input.client.auth.set({ path: { id: PROVIDER_ID }, body: toOpenCodeAuth(c) })
          } catch (err) {
            debug(`could not update OpenCode's stored auth: ${err?.message ?? err}`)
          }
        }

        return {
          apiKey: PLACEHOLDER_API_KEY,
          baseURL: loaderBaseURL,
          fetch: async (url, init) => {
            // The API host can change with a refresh (resource_url); the CLI recomputes it per request.
            const c = userBaseURL ? null : currentOrNull(client, debug)
            const target = c ? rebase(String(url instanceof Request ? url.url : url), loaderBaseURL, c.apiBaseUrl) : url
            try {
              return await notify.watch(client.fetch(target, init), { client })
            } finally {
              await mirror()
            }
          },
        }
      },
      methods: [
        {
          type: 'oauth',
          label: LOGIN.oauthLabel,
          authorize: async () => {
            const session = await api.startLogin(options)
            openBrowser(session.verificationUriComplete, debug)
            const until = new Date(Date.now() + session.expiresIn * 1000)
            const minutes = Math.max(1, Math.round(session.expiresIn / 60))
            return {
              url: session.verificationUriComplete,
              instructions:
                `Enter code ${session.userCode} at ${session.verificationUri} ` +
                `(the link above already carries it). The code expires in ${minutes} min, at ${until.toLocaleTimeString()}. ` +
                `Note: ${LOGIN.oauthServiceNote} If yours is refused too, log in with "${LOGIN.apiKeyLabel}" instead.`,
              method: 'auto',
              callback: async () => {
                try {
                  const c = await session.wait()
                  // `type` must stay 'success' (toOpenCodeAuth's own type 'oauth' would overwrite it and fail the login).
                  return { ...toOpenCodeAuth(c), type: 'success' }
                } catch (err) {
                  console.error(`Qwen login failed: ${err?.message ?? err}`)
                  return { type: 'failed' }
                }
              },
            }
          },
        },
        {
          // OpenCode asks for the key itself after our prompts (its own key field: the TUI's /connect dialog,
          // masked in `opencode auth login`) and stores it with the prompt answers as metadata:
          // {type:'api', key, metadata:{endpoint}}; neither path hands the key to an api method's authorize().
          // A key prompt of ours would ask twice and copy the key into the metadata, so the key's shape is
          // checked where the key is used: before the first request, naming the endpoint (E_KEY_INVALID).
          type: 'api',
          label: LOGIN.apiKeyLabel,
          prompts: [
            {
              type: 'select',
              key: 'endpoint',
              message: 'Endpoint of your key (Coding Plan keys start with sk-sp-, DashScope keys with sk-)',
              options: api.apiKeyEndpoints(),
            },
          ],
        },
      ],
    },
  }
}

/**
 * The loader for a stored API key: requests go to the endpoint chosen at login (a `baseURL` the user wrote
 * in the provider's options wins) through the same Rust pipeline, which sets the key per request.
 */
function apiKeyLoader(auth, provider, options, notify, debug) {
  const key = String(auth.key ?? '').trim()
  const endpoint = String(
    provider?.options?.baseURL || auth.metadata?.endpoint || api.defaultApiKeyEndpoint(key),
  ).replace(/\/+$/, '')
  const problem = api.checkApiKey(key, endpoint)
  if (problem) debug(`the stored API key does not fit ${endpoint}; requests will fail with E_KEY_INVALID`)
  const client = api.createClient(options, { apiKey: key })
  debug(`API key login: requests go to ${endpoint}`)
  return {
    apiKey: PLACEHOLDER_API_KEY,
    baseURL: endpoint,
    fetch: (url, init) => notify.watch(client.fetch(url, init), { keyPath: true, client }),
  }
}

/** Errors worth telling the user about outside the failing request: each says what to do next. */
const TOAST_CODES = new Set([
  'E_TOKEN_REFUSED',
  'E_QUOTA_EXHAUSTED',
  'E_REFRESH_REJECTED',
  'E_NETWORK',
  'E_KEY_REFUSED',
  'E_KEY_NOT_ALLOWED',
  'E_KEY_INVALID',
  'E_UNTRUSTED_HOST',
])

/**
 * Service errors as OpenCode toasts, once per kind per session (this process), best effort: a host
 * without toasts, or a toast that fails, never affects the request. The error itself is always thrown.
 */
function createNotifier(input, debug) {
  const shown = new Set()
  const toast = (kind, variant, message) => {
    if (shown.has(kind)) return
    shown.add(kind)
    const show = input?.client?.tui?.showToast
    if (typeof show !== 'function') return
    // Not awaited: the request's outcome must not wait for the UI.
    withTimeout(
      Promise.resolve().then(() => show.call(input.client.tui, { body: { title: LOGIN.providerName, message, variant, duration: 15_000 } })),
      5000,
    ).catch((err) => debug(`could not show a toast: ${err?.message ?? err}`))
  }
  /** 80 % and 95 % of the daily limit: once per threshold per Beijing day (this process). */
  const checkQuota = (client) => {
    let q
    try {
      q = client?.quota?.()
    } catch {
      return
    }
    if (!q || !(q.dailyLimit > 0)) return
    const level = q.today >= q.dailyLimit * 0.95 ? 95 : q.today >= q.dailyLimit * 0.8 ? 80 : 0
    if (!level) return
    // Past 95 % at once: an 80 % warning afterwards would say less than the one shown.
    if (level === 95) shown.add(`QUOTA_80_${q.dayResetsAt}`)
    toast(`QUOTA_${level}_${q.dayResetsAt}`, level === 95 ? 'warning' : 'info', quotaMessage(q))
  }
  return {
    /** Resolves like `response`; errors and 429s are reported on the way, the daily count after each request. */
    async watch(response, { keyPath = false, client } = {}) {
      let res
      try {
        res = await response
      } catch (err) {
        if (TOAST_CODES.has(err?.code)) toast(err.code, 'error', err.message)
        throw err
      } finally {
        checkQuota(client)
      }
      if (res.status === 429) {
        toast('RATE_LIMITED', 'warning', rateLimitMessage(res.headers, keyPath))
      }
      return res
    },
  }
}

function quotaMessage(q) {
  const pct = Math.floor((q.today / q.dailyLimit) * 100)
  const reset = new Date(q.dayResetsAt).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
  return (
    `${q.today} of ${q.dailyLimit} Qwen requests today from this machine (${pct} %). The count resets at 00:00 ` +
    `Beijing time (${reset} here). See \`npx opencode-qwen-oauth status\`; the plugin option dailyLimit sets the limit.`
  )
}

/** Our pipeline already waited and retried; the 429 that still comes back says how long the server wants. */
function rateLimitMessage(headers, keyPath) {
  let seconds
  const ms = Number(headers.get('retry-after-ms'))
  const after = headers.get('retry-after')
  if (headers.get('retry-after-ms') && Number.isFinite(ms) && ms >= 0) seconds = ms / 1000
  else if (after && Number.isFinite(Number(after))) seconds = Number(after)
  else if (after && !Number.isNaN(Date.parse(after))) seconds = Math.max(0, (Date.parse(after) - Date.now()) / 1000)
  const wait = seconds === undefined ? 'about a minute' : `${Math.ceil(seconds)} s`
  const next = keyPath
    ? 'space requests out with the plugin option minIntervalMs, or check the limits of your plan in the Model Studio console.'
    : `space requests out with the plugin option minIntervalMs, or use an API key: ${LOGIN.apiKeyLoginChoice}.`
  return `Qwen is rate limiting requests (429), still after our retries. Wait ${wait}, then send the message again. If it keeps happening, ${next}`
}

export default QwenCodePlugin

function toOpenCodeAuth(c) {
  const auth = { type: 'oauth', access: c.accessToken, refresh: c.refreshToken, expires: c.expiryDate }
  // OpenCode strips unknown auth fields; enterpriseUrl survives and carries Qwen's resource_url.
  if (c.resourceUrl) auth.enterpriseUrl = c.resourceUrl
  return auth
}

function currentOrNull(client, debug) {
  try {
    return client.currentCredentials()
  } catch (err) {
    debug(`credentials unavailable: ${err?.message ?? err}`)
    return null
  }
}

function rebase(url, from, to) {
  if (!from || !to || from === to || !url.startsWith(from)) return url
  return to + url.slice(from.length)
}

/**
 * A user who logged in with the Qwen Code CLI has a valid oauth_creds.json but nothing in OpenCode's store;
 * OpenCode runs the loader only when stored auth exists, so store it once at start-up.
 */
async function adoptQwenCliLogin(input, options, debug) {
  if (hasStoredAuth()) return
  let creds
  try {
    creds = api.loadCredentials(options)
  } catch (err) {
    debug(`not adopting the Qwen CLI login: ${err?.message ?? err}`)
    return
  }
  if (!creds || !input?.client?.auth?.set) return
  try {
    await withTimeout(input.client.auth.set({ path: { id: PROVIDER_ID }, body: toOpenCodeAuth(creds) }), 5000)
    debug('adopted the Qwen Code CLI login from oauth_creds.json')
  } catch (err) {
    debug(`could not store the Qwen CLI login in OpenCode: ${err?.message ?? err}`)
  }
}

function hasStoredAuth() {
  try {
    const raw =
      process.env.OPENCODE_AUTH_CONTENT ??
      readFileSync(join(process.env.XDG_DATA_HOME || join(homedir(), '.local', 'share'), 'opencode', 'auth.json'), 'utf8')
    return Boolean(JSON.parse(raw)?.[PROVIDER_ID])
  } catch {
    return false
  }
}

function withTimeout(promise, ms) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Best effort, never fails: no display or no opener just means the user opens the link shown. */
function openBrowser(url, debug) {
  if (process.env.QWEN_OAUTH_NO_BROWSER) return
  // Web links only: a server-chosen `file:` link, or one that reads as an option, must not reach the opener.
  if (!/^https?:\/\//i.test(String(url))) {
    debug('not opening a browser: the verification link is not an http(s) URL')
    return
  }
  const platform = process.platform
  let cmd
  let args
  if (platform === 'darwin') [cmd, args] = ['open', [url]]
  else if (platform === 'win32') [cmd, args] = ['rundll32', ['url.dll,FileProtocolHandler', url]]
  else {
    if (!process.env.DISPLAY && !process.env.WAYLAND_DISPLAY) return
    ;[cmd, args] = ['xdg-open', [url]]
  }
  try {
    // The URL is an argument, never shell text.
    const child = spawn(cmd, args, { stdio: 'ignore', detached: true, shell: false })
    child.on('error', (err) => debug(`could not open a browser: ${err.message}`))
    child.unref()
  } catch (err) {
    debug(`could not open a browser: ${err?.message ?? err}`)
  }
}
