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
// OpenCode's own placeholder for OAuth providers: the real token is set per request by our fetch.
const PLACEHOLDER_API_KEY = 'opencode-oauth-dummy-key'

/** @type {import('@opencode-ai/plugin').Plugin} */
export const QwenCodePlugin = async (input, pluginOptions) => {
  const options = pluginOptions ?? {}
  const debug = (msg) => {
    if (options.debug || (process.env.QWEN_OAUTH_DEBUG && process.env.QWEN_OAUTH_DEBUG !== '0')) {
      console.error(`[opencode-qwen-oauth] ${msg}`)
    }
  }
  await adoptQwenCliLogin(input, options, debug)

  return {
    config: async (cfg) => {
      cfg.provider ??= {}
      cfg.provider[PROVIDER_ID] = api.providerConfig(cfg.provider[PROVIDER_ID])
    },

    auth: {
      provider: PROVIDER_ID,
      loader: async (getAuth, provider) => {
        const auth = await getAuth()
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
              return await client.fetch(target, init)
            } finally {
              await mirror()
            }
          },
        }
      },
      methods: [
        {
          type: 'oauth',
          label: 'Qwen Code (qwen.ai OAuth)',
          authorize: async () => {
            const session = await api.startLogin(options)
            openBrowser(session.verificationUriComplete, debug)
            const until = new Date(Date.now() + session.expiresIn * 1000)
            const minutes = Math.max(1, Math.round(session.expiresIn / 60))
            return {
              url: session.verificationUriComplete,
              instructions:
                `Enter code ${session.userCode} at ${session.verificationUri} ` +
                `(the link above already carries it). The code expires in ${minutes} min, at ${until.toLocaleTimeString()}.`,
              method: 'auto',
              callback: async () => {
                try {
                  const c = await session.wait()
                  return { type: 'success', ...toOpenCodeAuth(c) }
                } catch (err) {
                  console.error(`Qwen login failed: ${err?.message ?? err}`)
                  return { type: 'failed' }
                }
              },
            }
          },
        },
      ],
    },
  }
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
