// The API-key path (Alibaba Cloud Coding Plan / DashScope keys): the JS API's createClient({apiKey}) and the
// plugin's "Qwen API key" method and loader, against the mock Qwen server (config.apiKeys accepts the keys).
// Headers as the CLI sends them for keys, the coder-model alias rewritten in the body, key errors explained,
// pacing and aborts unchanged, service errors shown once as toasts. node:test; also runs under `bun test`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import api from '../api.cjs'
import { QwenCodePlugin } from '../index.js'
import { startMockQwen } from './support/mock-qwen.mjs'
import { cleanupsAfterEach, until, removeTempDir } from './support/helpers.mjs'

const CHAT = '/v1/chat/completions'
const NO_PACING = { minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0 }
const CODING_KEY = 'sk-sp-test-coding-plan-key-0123456789'
const DASHSCOPE_KEY = 'sk-test-dashscope-key-0123456789'
const LOGIN_CHOICE = '`opencode auth login` → Qwen Code → Qwen API key (Coding Plan / DashScope)'

const cleanups = cleanupsAfterEach()

function tempDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-apikey-'))
  cleanups.push(() => removeTempDir(dir))
  return dir
}

/** A mock accepting both test keys, and a private QWEN_HOME (the pacing state lives there); no OAuth login. */
async function setup({ config = {}, options = {} } = {}) {
  const mock = await startMockQwen({ config: { apiKeys: [CODING_KEY, DASHSCOPE_KEY], ...config } })
  cleanups.push(() => mock.close())
  const qwenHome = path.join(tempDir(), 'qwen-home')
  fs.mkdirSync(qwenHome, { mode: 0o700 })
  const opts = { qwenHome, ...NO_PACING, maxWaitMs: 5000, ...options }
  return { mock, opts, base: `${mock.url}/v1`, url: `${mock.url}${CHAT}` }
}

/** A request as OpenCode's AI SDK sends it (its placeholder bearer and session headers included). */
function chatInit({ model = 'coder-model', stream = false, extra = {}, headers = {}, signal } = {}) {
  return {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: 'Bearer opencode-oauth-dummy-key',
      'x-session-affinity': 'ses_1',
      ...headers,
    },
    body: JSON.stringify({ model, max_tokens: 32000, messages: [{ role: 'user', content: 'say "coder-model"' }], stream, ...extra }),
    signal,
  }
}

const chats = (mock) => mock.requestsTo(CHAT)
const rejection = (p) => p.then(() => null, (e) => e)
const noKeyIn = (text) => !text.includes(CODING_KEY) && !text.includes(DASHSCOPE_KEY)

/** An OAuth login in the CLI's file format, from tokens the mock issued. */
function writeOAuthLogin(qwenHome, issued) {
  const { access_token, refresh_token, token_type, resource_url, expiry_date } = issued
  const text = JSON.stringify({ access_token, refresh_token, token_type, resource_url, expiry_date }, null, 2)
  fs.writeFileSync(path.join(qwenHome, 'oauth_creds.json'), text, { mode: 0o600 })
}

// ─── the login's endpoint choices and the key-shape check (Rust, through the binding) ─────────────

test('the four endpoints of the login prompt, in order, with their URLs', () => {
  const eps = api.apiKeyEndpoints()
  assert.deepEqual(
    eps.map((e) => [e.label, e.value]),
    [
      ['Coding Plan China', 'https://coding.dashscope.aliyuncs.com/v1'],
      ['Coding Plan international', 'https://coding-intl.dashscope.aliyuncs.com/v1'],
      ['DashScope Beijing', 'https://dashscope.aliyuncs.com/compatible-mode/v1'],
      ['DashScope Singapore', 'https://dashscope-intl.aliyuncs.com/compatible-mode/v1'],
    ],
  )
  for (const e of eps) assert.ok(e.hint.length > 0)
})

test('key shape: Coding Plan wants sk-sp-, DashScope wants sk- and refuses Coding Plan keys', () => {
  const [cn, intl, bj, sg] = api.apiKeyEndpoints().map((e) => e.value)
  assert.equal(api.checkApiKey(CODING_KEY, cn), null)
  assert.equal(api.checkApiKey(CODING_KEY, intl), null)
  assert.equal(api.checkApiKey(DASHSCOPE_KEY, bj), null)
  assert.equal(api.checkApiKey(DASHSCOPE_KEY, sg), null)
  const wrongForPlan = api.checkApiKey(DASHSCOPE_KEY, cn)
  assert.match(wrongForPlan, /Coding Plan API keys start with "sk-sp-"/)
  assert.match(wrongForPlan, /Coding Plan China/)
  assert.ok(noKeyIn(wrongForPlan))
  assert.match(api.checkApiKey(CODING_KEY, sg), /Coding Plan key .*DashScope Singapore/)
  assert.match(api.checkApiKey('', bj), /Paste your Qwen API key/)
  assert.equal(api.defaultApiKeyEndpoint(CODING_KEY), cn)
  assert.equal(api.defaultApiKeyEndpoint(DASHSCOPE_KEY), bj)
})

// ─── createClient({apiKey}) against the mock ───────────────────────────────────────────────────────

test('key path: the key is the bearer, with the headers the CLI sends for keys (auth type openai)', async () => {
  const { mock, opts, url } = await setup()
  const client = api.createClient(opts, { apiKey: CODING_KEY })
  const res = await client.fetch(url, chatInit())
  assert.equal(res.status, 200)
  await res.json()
  const [rec] = chats(mock)
  const h = rec.headers
  assert.ok(h.authorization === `Bearer ${CODING_KEY}`, 'Authorization carries the API key, not the placeholder')
  assert.equal(h['x-dashscope-authtype'], 'openai')
  assert.equal(h['user-agent'], api.userAgent())
  assert.match(h['user-agent'], /^QwenCode\/\d+\.\d+\.\d+ \([^;]+; [^)]+\)$/)
  assert.equal(h['x-dashscope-useragent'], h['user-agent'])
  assert.equal(h['x-dashscope-cachecontrol'], 'enable')
  assert.equal(h['x-session-affinity'], undefined)
  assert.equal(mock.refreshGrants, 0)
  assert.equal(client.currentCredentials(), null)
})

test('coder-model becomes the plan default (Coding Plan: qwen3.5-plus) and the rest of the body is kept byte for byte', async () => {
  const { mock, opts, url } = await setup()
  // The CLI-aligned body rewrite (body.test.mjs) is off here: this is about the alias alone.
  const client = api.createClient({ ...opts, alignRequestBody: false }, { apiKey: CODING_KEY })
  const init = chatInit()
  await (await client.fetch(url, init)).arrayBuffer()
  const [rec] = chats(mock)
  assert.equal(rec.json.model, 'qwen3.5-plus')
  assert.equal(rec.rawBody, init.body.replace('"model":"coder-model"', '"model":"qwen3.5-plus"'))
  assert.equal(rec.json.messages[0].content, 'say "coder-model"', 'only the top-level model changes')
})

test('coder-model with a DashScope key becomes qwen3.6-plus; named models and non-JSON bodies are untouched', async () => {
  const { mock, opts, url } = await setup()
  const client = api.createClient(opts, { apiKey: DASHSCOPE_KEY })
  await (await client.fetch(url, chatInit())).arrayBuffer()
  await (await client.fetch(url, chatInit({ model: 'qwen3-coder-plus' }))).arrayBuffer()
  const text = chatInit()
  text.headers['content-type'] = 'text/plain'
  await (await client.fetch(url, text)).arrayBuffer()
  const recs = chats(mock)
  assert.equal(recs[0].json.model, 'qwen3.6-plus')
  assert.equal(recs[1].json.model, 'qwen3-coder-plus')
  assert.equal(recs[2].rawBody, text.body, 'a body that is not declared JSON is sent as is')
})

test('OAuth path keeps coder-model as is', async () => {
  const { mock, opts, url } = await setup()
  const issued = mock.issueTokens()
  writeOAuthLogin(opts.qwenHome, issued)
  const client = api.createClient({ ...opts, oauthBaseUrl: mock.url })
  await (await client.fetch(url, chatInit())).arrayBuffer()
  const [rec] = chats(mock)
  assert.equal(rec.json.model, 'coder-model')
  assert.equal(rec.headers['x-dashscope-authtype'], 'qwen-oauth')
})

test('401 on the key path: E_KEY_REFUSED "key refused for this endpoint", naming it, no retry', async () => {
  const { mock, opts, url } = await setup()
  const client = api.createClient(opts, { apiKey: 'sk-sp-not-a-known-key-000' })
  const err = await rejection(client.fetch(url, chatInit()))
  assert.equal(err?.code, 'E_KEY_REFUSED')
  assert.match(err.message, /key refused for this endpoint/)
  assert.ok(err.message.includes(`${mock.url}/v1/chat/completions`), 'names the endpoint')
  assert.match(err.message, /region/)
  assert.match(err.message, /Coding Plan keys \(sk-sp-…\)/)
  assert.ok(err.message.includes(LOGIN_CHOICE), err.message)
  assert.ok(!err.message.includes('sk-sp-not-a-known-key-000'), 'the key never appears in the message')
  assert.equal(chats(mock).length, 1)
  assert.equal(mock.refreshGrants, 0)
})

test('405 "only available for Coding Agents" is explained (E_KEY_NOT_ALLOWED); another 405 is handed back', async () => {
  const { mock, opts, url } = await setup()
  const client = api.createClient(opts, { apiKey: CODING_KEY })
  mock.enqueue({ status: 405, body: { error: 'Coding Plan is currently only available for Coding Agents' } })
  const err = await rejection(client.fetch(url, chatInit()))
  assert.equal(err?.code, 'E_KEY_NOT_ALLOWED')
  assert.match(err.message, /405 "Coding Plan is currently only available for Coding Agents"/)
  assert.match(err.message, /User-Agent/)
  assert.match(err.message, /DashScope Beijing or Singapore/)
  assert.ok(err.message.includes(LOGIN_CHOICE), err.message)

  mock.enqueue({ status: 405, body: { error: { message: 'Method Not Allowed' } } })
  const res = await client.fetch(url, chatInit())
  assert.equal(res.status, 405)
  assert.equal((await res.json()).error.message, 'Method Not Allowed', 'the body read for classification is replayed')
  assert.equal(chats(mock).length, 2, 'no retries')
})

test('a key that cannot fit a known endpoint is refused before anything is sent (E_KEY_INVALID)', async () => {
  const { opts } = await setup()
  const client = api.createClient(opts, { apiKey: DASHSCOPE_KEY })
  // No network here: an attempt to send would end in E_NETWORK after retries, not in E_KEY_INVALID at once.
  const err = await rejection(client.fetch('https://coding.dashscope.aliyuncs.com/v1/chat/completions', chatInit()))
  assert.equal(err?.code, 'E_KEY_INVALID')
  assert.match(err.message, /Coding Plan API keys start with "sk-sp-"/)
  assert.ok(err.message.includes(LOGIN_CHOICE))
  assert.ok(noKeyIn(err.message))
})

test('key path keeps the 429 Retry-After handling: waited out, then answered', async () => {
  const { mock, opts, url } = await setup()
  const client = api.createClient(opts, { apiKey: CODING_KEY })
  mock.enqueue429({ retryAfter: 1 })
  const res = await client.fetch(url, chatInit())
  assert.equal(res.status, 200)
  await res.arrayBuffer()
  const recs = chats(mock)
  assert.deepEqual(recs.map((r) => r.status), [429, 200])
  assert.ok(recs[1].hr - recs[0].hr >= 1000, 'Retry-After: 1 honoured')
  assert.equal(recs[1].json.model, 'qwen3.5-plus', 'the retry sends the rewritten body too')
})

test('key path is paced machine-wide like OAuth: request starts at least minIntervalMs apart', async () => {
  const { mock, opts, url } = await setup({ options: { minIntervalMs: 400, jitterMinMs: 0, jitterMaxMs: 0 } })
  const client = api.createClient(opts, { apiKey: CODING_KEY })
  // One request first: the connection (and, with the runtime transport, Node's fetch itself) is set up before
  // the paced ones, so arrival gaps at the mock show the start gaps and not a first connect.
  await (await client.fetch(url, chatInit())).arrayBuffer()
  await Promise.all([0, 1, 2].map(async () => (await client.fetch(url, chatInit())).arrayBuffer()))
  const at = chats(mock)
    .map((r) => r.hr)
    .sort((a, b) => a - b)
  assert.equal(at.length, 4)
  for (let i = 2; i < at.length; i++) assert.ok(at[i] - at[i - 1] >= 395, `gap ${i}: ${(at[i] - at[i - 1]).toFixed(0)} ms`)
})

test('key path streams chunk by chunk, and an abort mid-stream closes the upstream connection', async () => {
  const { mock, opts, url } = await setup()
  const client = api.createClient(opts, { apiKey: CODING_KEY })
  mock.enqueueStream({ chunks: ['tick '], intervalMs: 20, endless: true })
  const ac = new AbortController()
  const res = await client.fetch(url, chatInit({ stream: true, signal: ac.signal }))
  assert.equal(res.status, 200)
  const reader = res.body.getReader()
  const first = await reader.read()
  assert.ok(new TextDecoder().decode(first.value).includes('data: '))
  ac.abort()
  const gone = await mock.waitForDisconnect(5000)
  assert.equal(gone.path, CHAT)
  assert.ok((await rejection(reader.read())) instanceof Error, 'the body errors after the abort')
})

test('an abort during the pacing wait ends it at once and nothing is sent', async () => {
  const { mock, opts, url } = await setup({ options: { minIntervalMs: 30_000, jitterMinMs: 0, jitterMaxMs: 0 } })
  const client = api.createClient(opts, { apiKey: CODING_KEY })
  await (await client.fetch(url, chatInit())).arrayBuffer() // takes the slot; the next one must wait 30 s
  const statePath = path.join(opts.qwenHome, 'opencode_qwen_pacing.json')
  const nextStart = () => {
    try {
      return JSON.parse(fs.readFileSync(statePath, 'utf8')).next_start_ms
    } catch {
      return NaN // rewritten in place under an OS lock: an unlocked read may catch it half-written
    }
  }
  await until(() => nextStart() > 0, 'the first slot in the state file')
  const booked = nextStart()
  const ac = new AbortController()
  const pending = client.fetch(url, chatInit({ signal: ac.signal }))
  // Abort once the second request holds its slot, i.e. sleeps in the pacing wait.
  await until(() => nextStart() >= booked + 30_000, 'the second slot to be reserved')
  ac.abort()
  const err = await rejection(pending)
  assert.equal(err?.name, 'AbortError')
  assert.equal(chats(mock).length, 1, 'the aborted request never reached the server')
  // fetch rejects at once; the native side gives the slot back just after. Wait for it, so that the cleanup
  // does not race that write.
  await until(() => nextStart() === booked, 'the unused slot to be given back')
})

// ─── the plugin: auth method, loader, toasts ───────────────────────────────────────────────────────

/** A fake OpenCode plugin input: records toasts and auth.set calls. */
function fakeInput({ toast } = {}) {
  const toasts = []
  const sets = []
  const client = {
    auth: { set: async (arg) => (sets.push(arg), { data: true }) },
    tui: { showToast: toast ?? (async (arg) => (toasts.push(arg.body), { data: true })) },
  }
  return { input: { client, directory: '/', worktree: '/' }, toasts, sets }
}

async function plugin(opts, input) {
  // No XDG data of the real user: the plugin looks for OpenCode's auth.json at start-up.
  const prev = process.env.XDG_DATA_HOME
  process.env.XDG_DATA_HOME = tempDir()
  try {
    return await QwenCodePlugin(input, opts)
  } finally {
    if (prev === undefined) delete process.env.XDG_DATA_HOME
    else process.env.XDG_DATA_HOME = prev
  }
}

test('plugin: a second auth method, type api, with the endpoint select prompt', async () => {
  const { opts } = await setup()
  const hooks = await plugin(opts, fakeInput().input)
  const methods = hooks.auth.methods
  assert.equal(hooks.auth.provider, 'qwen-code')
  assert.deepEqual(
    methods.map((m) => [m.type, m.label]),
    [
      ['oauth', 'Qwen Code (qwen.ai OAuth)'],
      ['api', 'Qwen API key (Coding Plan / DashScope)'],
    ],
  )
  const [prompt] = methods[1].prompts
  assert.equal(prompt.type, 'select')
  assert.equal(prompt.key, 'endpoint')
  assert.deepEqual(prompt.options.map((o) => o.value), api.apiKeyEndpoints().map((e) => e.value))
  // OpenCode asks for the key in its own field and stores the prompt answers as metadata.
  assert.equal(methods[1].prompts.length, 1)
  const cfg = {}
  await hooks.config(cfg)
  for (const id of ['coder-model', 'qwen3.5-plus', 'qwen3-coder-plus', 'qwen3-coder-next']) assert.ok(cfg.provider['qwen-code'].models[id], id)
})

test('plugin loader for a stored key: baseURL from the login metadata, placeholder apiKey, requests carry the key', async () => {
  const { mock, opts, base } = await setup()
  const hooks = await plugin(opts, fakeInput().input)
  const loaded = await hooks.auth.loader(async () => ({ type: 'api', key: CODING_KEY, metadata: { endpoint: `${base}/` } }), {
    options: {},
  })
  assert.equal(loaded.baseURL, base, 'the stored endpoint, without a trailing slash')
  assert.equal(loaded.apiKey, 'opencode-oauth-dummy-key', 'the key itself stays out of the AI SDK')
  const res = await loaded.fetch(`${loaded.baseURL}/chat/completions`, chatInit())
  assert.equal(res.status, 200)
  await res.json()
  const [rec] = chats(mock)
  assert.ok(rec.headers.authorization === `Bearer ${CODING_KEY}`)
  assert.equal(rec.json.model, 'qwen3.5-plus')
})

test('plugin loader: a baseURL in the user’s provider options wins; no metadata → the key’s plan default', async () => {
  const { opts } = await setup()
  const hooks = await plugin(opts, fakeInput().input)
  const auth = async () => ({ type: 'api', key: DASHSCOPE_KEY, metadata: { endpoint: 'https://coding.dashscope.aliyuncs.com/v1' } })
  const mine = await hooks.auth.loader(auth, { options: { baseURL: 'https://proxy.example.com/v1' } })
  assert.equal(mine.baseURL, 'https://proxy.example.com/v1')
  const bare = await hooks.auth.loader(async () => ({ type: 'api', key: DASHSCOPE_KEY }), { options: {} })
  assert.equal(bare.baseURL, 'https://dashscope.aliyuncs.com/compatible-mode/v1')
})

test('plugin: a key error is thrown every time and shown as a toast once per session', async () => {
  const { mock, opts, base } = await setup()
  const { input, toasts } = fakeInput()
  const hooks = await plugin(opts, input)
  const loaded = await hooks.auth.loader(async () => ({ type: 'api', key: 'sk-sp-revoked-key-000', metadata: { endpoint: base } }), { options: {} })
  for (let i = 0; i < 2; i++) {
    const err = await rejection(loaded.fetch(`${base}/chat/completions`, chatInit()))
    assert.equal(err?.code, 'E_KEY_REFUSED')
    assert.match(err.message, /key refused for this endpoint/)
  }
  await until(() => toasts.length >= 1, 'the toast')
  assert.equal(toasts.length, 1, 'once per session')
  assert.equal(toasts[0].variant, 'error')
  assert.match(toasts[0].message, /key refused for this endpoint/)
  assert.ok(toasts[0].message.includes(LOGIN_CHOICE))
  assert.ok(!toasts[0].message.includes('sk-sp-revoked-key-000'))
  assert.equal(chats(mock).length, 2)
})

test('plugin: a 429 still there after the retries gives a toast with the wait; the response reaches OpenCode', async () => {
  const { mock, opts, base } = await setup({ options: { maxRetries: 0 } })
  const { input, toasts } = fakeInput()
  const hooks = await plugin(opts, input)
  const loaded = await hooks.auth.loader(async () => ({ type: 'api', key: CODING_KEY, metadata: { endpoint: base } }), { options: {} })
  mock.enqueue429({ retryAfter: 37 })
  const res = await loaded.fetch(`${base}/chat/completions`, chatInit())
  assert.equal(res.status, 429)
  await res.arrayBuffer()
  await until(() => toasts.length >= 1, 'the rate-limit toast')
  assert.equal(toasts[0].variant, 'warning')
  assert.match(toasts[0].message, /rate limiting requests \(429\)/)
  assert.match(toasts[0].message, /Wait 37 s/)
})

test('plugin: OAuth service errors get the toast too (daily quota), naming the API-key login', async () => {
  const { mock, opts } = await setup()
  mock.config.resourceUrl = mock.url // plain-HTTP loopback API base (a bare host means https)
  const issued = mock.issueTokens()
  writeOAuthLogin(opts.qwenHome, issued)
  const { input, toasts } = fakeInput()
  const hooks = await plugin({ ...opts, oauthBaseUrl: mock.url }, input)
  const loaded = await hooks.auth.loader(
    async () => ({ type: 'oauth', access: issued.access_token, refresh: issued.refresh_token, expires: issued.expiry_date, enterpriseUrl: issued.resource_url }),
    { options: {} },
  )
  mock.enqueueQuota()
  const err = await rejection(loaded.fetch(`${loaded.baseURL}/chat/completions`, chatInit()))
  assert.equal(err?.code, 'E_QUOTA_EXHAUSTED')
  assert.ok(err.message.includes(LOGIN_CHOICE), err.message)
  await until(() => toasts.length >= 1, 'the quota toast')
  assert.match(toasts[0].message, /daily free Qwen quota/)
})

test('plugin: a failing or missing toast API never affects the request', async () => {
  const { mock, opts, base } = await setup()
  const throwing = fakeInput({ toast: () => Promise.reject(new Error('no TUI here')) })
  const hooks = await plugin(opts, throwing.input)
  const loaded = await hooks.auth.loader(async () => ({ type: 'api', key: 'sk-sp-revoked-key-000', metadata: { endpoint: base } }), { options: {} })
  assert.equal((await rejection(loaded.fetch(`${base}/chat/completions`, chatInit())))?.code, 'E_KEY_REFUSED')

  const bare = await plugin(opts, { client: { auth: { set: async () => ({}) } } })
  const loaded2 = await bare.auth.loader(async () => ({ type: 'api', key: CODING_KEY, metadata: { endpoint: base } }), { options: {} })
  const res = await loaded2.fetch(`${base}/chat/completions`, chatInit())
  assert.equal(res.status, 200)
  await res.arrayBuffer()
  assert.equal(chats(mock).length, 2)
})
