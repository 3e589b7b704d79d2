// bench/run.mjs --fetch-module adapter for opencode-qwen-auth@0.3.4 (foxswat; ESM dist/index.js, QwenOAuthPlugin).
// Install first: bash bench/plugins/install.sh. Works under Node (with a resolve hook, below) and Bun.
//
// What its fetch (auth.loader → { apiKey: '', fetch }) does per request:
//   - selectAccount() with the default "hybrid" strategy: health score, token bucket and LRU scores over its
//     account list, copying the list (a token bucket of 50 refilling 6/min only ranks accounts, it never waits);
//   - a refresh when the token expires within 300 s (proactive_refresh), to its oauth_base_url;
//   - awaits getAuth() again (OpenCode's auth store; here a record in memory, so that read costs nothing);
//   - strips a leading "undefined"/"null" from the URL; new Headers(init.headers) and sets Authorization:
//     Bearer <token>; no other header. A URL ending in /responses becomes /chat/completions with the body and the
//     answer translated between the Responses and Chat Completions APIs; /chat/completions goes through as is;
//   - globalThis.fetch(url, { ...init, headers }); logger.debug calls are no-ops unless QWEN_DEBUG is set;
//   - then, before the response is handed back: recordSuccess + health tracker, and `await saveAccounts()`:
//     proper-lockfile lock (mkdir <file>.lock), read + parse + merge the accounts JSON, write a temp file,
//     rename, chmod, unlock. So every request, and the first SSE chunk, waits for that file round trip.
//     On 429/5xx it marks the account rate-limited (Retry-After or 30 s-30 min tiers) and waits, all accounts
//     being limited.
//
// What this adapter does about it:
//   - No pacing to turn off: by default it waits only after a 429/5xx, as above.
//   - Files: its config (qwen.json) and account store (qwen-auth-accounts.json) live in
//     $XDG_CONFIG_HOME/opencode; XDG_CONFIG_HOME is a private temp dir (it never reads ~/.qwen). The project
//     config <directory>/.opencode/qwen.json is read from a temp dir too (none there: defaults).
//   - QWEN_OAUTH_BASE_URL (its env for oauth_base_url) = the mock, so a refresh could never leave the machine.
//   - Loading: its exports map sends Bun to src/index.ts, which the tarball does not ship, so dist/index.js is
//     imported by path. dist/ uses extensionless relative imports ("./src/plugin", "./plugin/config"), which
//     Bun resolves and Node's ESM loader refuses, so under Node a resolve hook (module.register) retries such
//     specifiers inside this package with ".js" and "/index.js". It acts at import time only.
import { isBun, oauthBase, oauthRecord, pluginFile, pluginInput, provider, tempDir } from './common.mjs'
import module from 'node:module'

const NAME = 'opencode-qwen-auth'

// Node resolve hook, run in the loader thread: only for relative specifiers from files of this package.
const hook = (scope) => `
const SCOPE = ${JSON.stringify(scope)}
export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context)
  } catch (err) {
    const fixable = err?.code === 'ERR_MODULE_NOT_FOUND' || err?.code === 'ERR_UNSUPPORTED_DIR_IMPORT'
    if (!fixable || !/^\\.\\.?\\//.test(specifier) || !context.parentURL?.startsWith(SCOPE)) throw err
    for (const suffix of ['.js', '/index.js']) {
      try {
        return await next(specifier + suffix, context)
      } catch {}
    }
    throw err
  }
}`

export async function createFetch(ctx) {
  // Before the import and the plugin call: read by loadConfig() and getConfigDir().
  process.env.XDG_CONFIG_HOME = tempDir('config')
  process.env.QWEN_OAUTH_BASE_URL = oauthBase(ctx)

  const entry = pluginFile(NAME, 'dist/index.js')
  if (!isBun) module.register('data:text/javascript,' + encodeURIComponent(hook(new URL('.', entry).href)))
  const { QwenOAuthPlugin } = await import(entry)

  const hooks = await QwenOAuthPlugin(pluginInput())
  const record = oauthRecord(ctx)
  const loaded = await hooks.auth.loader(async () => record, provider())
  if (typeof loaded?.fetch !== 'function') throw new Error(`${NAME}: loader() returned no fetch`)
  return loaded.fetch // a plain closure: no `this` to bind
}
