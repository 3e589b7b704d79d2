// bench/run.mjs --fetch-module adapter for opencode-qwen-oauth@2.4.1 (dreygur; ESM, dist/index.js, QwenOAuthPlugin).
// Install first: bash bench/plugins/install.sh. Works under Node and Bun.
//
// What its fetch (auth.loader → { apiKey: '', fetch: authMiddleware }) does per request:
//   - awaits tokenService.refreshIfNeeded(): once its token is cached, a Date.now() comparison returning the
//     cached record (OpenCode's record, given to loader(); it never re-reads getAuth or a file);
//   - requestQueue.enqueue(): by default sleeps until 1000 ms after the previous request went out, then
//     500-1500 ms of jitter more, on every request (see below);
//   - new Headers(init.headers), then sets Authorization: Bearer <its token>, User-Agent
//     QwenCode/0.10.3 (<platform>; <arch>), X-DashScope-CacheControl: enable, X-DashScope-UserAgent (same as the
//     UA), X-DashScope-AuthType: qwen-oauth;
//   - globalThis.fetch(url, { ...init, headers }): URL and body as given, the response returned as is
//     (429: sleeps Retry-After and resends, up to 3 tries; 401/403: refreshes once and resends).
//
// What this adapter does about it:
//   - Pacing off: the queue has no option or env, only the public fields of its module-level singleton, so
//     MIN_INTERVAL and the jitter are set to 0 on that instance (same module URL, so the one the fetch uses).
//     With them at 0 the queue still runs (an await, Date.now, Math.random), it just never sleeps.
//   - Its first request would always refresh: setCachedAuth() fills cachedAuth but not cachedToken, and
//     refreshIfNeeded() only trusts a record once cachedToken is set, so even a fresh token goes to the refresh
//     endpoint, hard-coded to https://chat.qwen.ai (no option or env; unreachable here). That is a one-off per
//     process, not per request, so the adapter puts its token service in the state its refresh leaves
//     (cachedToken, cachedTokenExpiry, lastRefreshTime: public fields of the exported singleton) with the
//     mock's valid token. Every measured request then takes the cached path (for 5 minutes; after that a few
//     more comparisons and a no-op log call per request). No refresh, no file write, no request at setup.
//   - Home: it keeps its own camelCase record in $HOME/.qwen/oauth_creds.json (the Qwen CLI's path, not its
//     format): written after a refresh, read only when getAuth() gives nothing or a refresh fails. HOME is a
//     private temp dir (not ctx.qwenHome: it would overwrite the CLI file `ours` reads in the same process).
//     Bun's os.homedir() ignores changes to process.env.HOME made at run time, so under Bun its repository's
//     save/load (exported singleton) are replaced by no-ops as well: it can never touch the real ~/.qwen.
//     Neither runs per request.
import { isBun, oauthRecord, pluginFile, pluginInput, provider, tempDir } from './common.mjs'
import fs from 'node:fs'
import path from 'node:path'

const NAME = 'opencode-qwen-oauth'

export async function createFetch(ctx) {
  // Before the import: its credential path is computed from os.homedir() at module load (Node honours HOME).
  const home = tempDir('home')
  fs.mkdirSync(path.join(home, '.qwen'), { mode: 0o700 })
  process.env.HOME = home
  if (process.platform === 'win32') process.env.USERPROFILE = home

  const dist = (rel) => pluginFile(NAME, `dist/${rel}`)
  const { QwenOAuthPlugin } = await import(dist('index.js'))
  // The same module URLs as its own imports: the singletons its fetch uses.
  const { requestQueue } = await import(dist('middleware/rate-limit.middleware.js'))
  const { tokenService } = await import(dist('services/token.service.js'))
  const { credentialRepository } = await import(dist('repositories/credential.repository.js'))
  Object.assign(requestQueue, { MIN_INTERVAL: 0, JITTER_MIN: 0, JITTER_MAX: 0 })
  if (isBun) Object.assign(credentialRepository, { save: () => false, load: () => null, clear: () => false })

  const hooks = await QwenOAuthPlugin(pluginInput())
  const record = oauthRecord(ctx)
  const loaded = await hooks.auth.loader(async () => record, provider())
  if (typeof loaded?.fetch !== 'function') throw new Error(`${NAME}: loader() returned no fetch`)

  // What its refreshIfNeeded() sets after a successful refresh (here: the token loader() was given).
  if (tokenService.getCachedAuth() !== record) throw new Error(`${NAME}: loader() did not cache the OAuth record`)
  Object.assign(tokenService, { cachedToken: record.access, cachedTokenExpiry: record.expires, lastRefreshTime: Date.now() })

  return loaded.fetch // a plain closure: no `this` to bind
}
