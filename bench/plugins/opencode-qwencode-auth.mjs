// bench/run.mjs --fetch-module adapter for opencode-qwencode-auth@1.3.0 (gustavodiasdev; TypeScript source only,
// index.ts → src/index.ts, QwenAuthPlugin). Install first: bash bench/plugins/install.sh.
// Bun only (it ships .ts files importing each other as ".js", which Node cannot load): run the suite with
//   node bench/run.mjs --runtimes bun --fetch-module bench/plugins/opencode-qwencode-auth.mjs ...
//
// It has no fetch of its own. auth.loader returns { apiKey: <access token>, baseURL: 'https://portal.qwen.ai/v1' }
// (or null without an OAuth record), so OpenCode's AI SDK provider sends every request with the runtime's own
// fetch and its own `Authorization: Bearer <apiKey>`: no plugin code runs per request, no Qwen headers are added
// (it has no chat.headers hook either), URL and body are the SDK's. The token is read once, when loader runs
// (refreshed first if it expires within 60 s, at https://chat.qwen.ai, hard-coded); it is not refreshed later.
// So what this adapter returns, after loading the plugin and checking what loader gives, is the runtime's
// fetch: its row measures the baseline against itself (a noise check). baseURL is pointed at the mock by the
// bench's URL, as OpenCode's provider option would be. Nothing paces or queues requests.
//
// Files: it reads none. It writes $HOME/.qwen/oauth_creds.json (the Qwen CLI's format) only after a login or a
// refresh, and HOME cannot be redirected here (Bun's os.homedir() ignores changes to process.env.HOME made at
// run time), so the adapter makes sure loader() has no reason to refresh: it refuses a record expiring within
// 2 minutes (the mock issues 1-hour tokens). A refresh would go to chat.qwen.ai anyway, with a mock token.
import { isBun, oauthRecord, pluginFile, pluginInput, provider } from './common.mjs'

const NAME = 'opencode-qwencode-auth'

export async function createFetch(ctx) {
  if (!isBun) throw new Error(`${NAME} ships TypeScript source only and runs under Bun only: use --runtimes bun`)

  const record = oauthRecord(ctx)
  if (record.expires - Date.now() < 120_000) throw new Error(`${NAME}: the token expires within 2 minutes: loader() would refresh`)

  const { QwenAuthPlugin } = await import(pluginFile(NAME, 'index.ts'))
  const hooks = await QwenAuthPlugin(pluginInput())
  const loaded = await hooks.auth.loader(async () => record, provider())
  if (!loaded) throw new Error(`${NAME}: loader() returned null (no usable OAuth record)`)
  if (loaded.fetch) throw new Error(`${NAME}: loader() now returns a fetch: update this adapter to use it`)
  if (loaded.apiKey !== ctx.accessToken) throw new Error(`${NAME}: loader() apiKey is not the issued access token`)

  // The AI SDK's path: the runtime's fetch; the bench's requests already carry `Authorization: Bearer <apiKey>`.
  return globalThis.fetch.bind(globalThis)
}
