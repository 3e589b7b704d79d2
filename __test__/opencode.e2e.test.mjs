// End-to-end: the real OpenCode (npm opencode-ai, pinned dev dependency) with this package as its plugin,
// offline: every request goes to the mock Qwen server on 127.0.0.1, every path lives in a temp dir.
// Run: node --test --test-concurrency=1 __test__/opencode.e2e.test.mjs   (build the addon first)
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import { startMockQwen } from './support/mock-qwen.mjs'
import { createOpenCodeEnv, freePort, PROVIDER_ID } from './support/opencode-env.mjs'

const CHAT = '/v1/chat/completions'
const TOKEN = '/api/v1/oauth2/token'
const DEVICE_KEY_ORDER = ['access_token', 'refresh_token', 'token_type', 'resource_url', 'expiry_date']
const TEST_TIMEOUT = 90_000

/**
 * A mock whose resource_url is an http URL, so the API base derived from it stays on plain-HTTP loopback.
 * Its port never contains 429/500/502/503/504/524: OpenCode retries any error whose message contains one
 * of those, and our error messages name the endpoint (a real endpoint has no port).
 */
async function startMock(config = {}) {
  let mock
  for (let attempt = 0; !mock; attempt++) {
    const port = await freePort()
    if (/429|50[0234]|524/.test(String(port))) continue
    try {
      mock = await startMockQwen({ port, config })
    } catch (err) {
      if (err.code !== 'EADDRINUSE' || attempt > 5) throw err
    }
  }
  if (config.resourceUrl === undefined) mock.config.resourceUrl = mock.url
  return mock
}

/** oauth_creds.json content in the key order of a device-flow save. */
function credsFile(t) {
  return {
    access_token: t.access_token,
    refresh_token: t.refresh_token,
    token_type: t.token_type ?? 'Bearer',
    resource_url: t.resource_url,
    expiry_date: t.expiry_date,
  }
}

/** OpenCode's stored auth for the same login (resource_url rides in enterpriseUrl). */
function openCodeAuth(t) {
  return {
    [PROVIDER_ID]: {
      type: 'oauth',
      access: t.access_token,
      refresh: t.refresh_token,
      expires: t.expiry_date,
      enterpriseUrl: t.resource_url,
    },
  }
}

/** A world with a mock and an OpenCode env, both torn down after the test. */
async function world(t, { mockConfig, ...envOpts } = {}) {
  const mock = await startMock(mockConfig)
  const oc = await createOpenCodeEnv({ oauthBaseUrl: mock.url, ...envOpts })
  t.after(async () => {
    await oc.cleanup()
    await mock.close()
  })
  return { mock, oc }
}

/** Everything OpenCode printed, for message checks; the bodies never hold tokens (mock tokens aren't echoed). */
const output = (r) => `${r.stdout}\n${r.stderr}`

/** Diagnostic for a failed run without its full logs (tail only). */
const describeRun = (r) => `rc=${r.code} signal=${r.signal} ${r.ms} ms\n--- stdout\n${r.stdout.slice(-1500)}\n--- stderr\n${r.stderr.slice(-3000)}`

function assertQwenHeaders(req, accessToken) {
  const h = req.headers
  assert.match(h['user-agent'] ?? '', /^QwenCode\/\d+\.\d+\.\d+\S* \([^;]+; [^)]+\)$/, 'User-Agent is the Qwen Code CLI one')
  assert.equal(h['x-dashscope-useragent'], h['user-agent'])
  assert.equal(h['x-dashscope-authtype'], 'qwen-oauth')
  assert.equal(h['x-dashscope-cachecontrol'], 'enable')
  assert.ok(h.authorization === `Bearer ${accessToken}`, 'Authorization carries the current access token')
  assert.equal(h['x-session-affinity'], undefined, 'x-session-affinity is stripped')
  assert.equal(h['openai-beta'], undefined, 'OpenAI-Beta is stripped')
}

test('the plugin loads in OpenCode and registers the qwen-code models', { timeout: TEST_TIMEOUT }, async (t) => {
  const { oc } = await world(t)
  const r = await oc.exec(['models', PROVIDER_ID], { timeoutMs: 60_000 })
  assert.equal(r.code, 0, describeRun(r))
  const models = r.stdout.split('\n').map((l) => l.trim())
  assert.ok(models.includes('qwen-code/coder-model'), describeRun(r))
  assert.ok(models.includes('qwen-code/vision-model'), describeRun(r))
})

test('login through OpenCode’s own auth flow (serve API), then opencode run answers', { timeout: TEST_TIMEOUT }, async (t) => {
  // The user approves by opening the link, as a person would (no auto-approval).
  const { mock, oc } = await world(t, { mockConfig: { autoApprove: false } })
  const srv = await oc.serve()
  try {
    const methods = await srv.providerAuthMethods()
    const list = methods[PROVIDER_ID]
    assert.ok(Array.isArray(list), `OpenCode lists auth methods for ${PROVIDER_ID}: ${JSON.stringify(methods)}`)
    const index = list.findIndex((m) => m.type === 'oauth' && m.label === 'Qwen Code (qwen.ai OAuth)')
    assert.ok(index >= 0, JSON.stringify(list))

    const auth = await srv.authorize(index)
    assert.equal(auth.method, 'auto')
    const link = new URL(auth.url)
    assert.equal(link.origin, mock.url)
    const userCode = link.searchParams.get('user_code')
    assert.match(userCode ?? '', /^[A-Z]{4}-[A-Z]{4}$/)
    assert.ok(auth.instructions.includes(userCode), auth.instructions)
    assert.match(auth.instructions, /free OAuth tier on 2026-04-15.* log in with "Qwen API key \(Coding Plan \/ DashScope\)" instead/)

    // OpenCode waits in callback() while the user approves in the browser.
    const pending = srv.callback(index)
    const page = await fetch(auth.url, { signal: AbortSignal.timeout(5000) })
    assert.equal(page.status, 200)
    const cb = await pending
    assert.equal(cb.status, 200, `${cb.text}\n--- opencode serve stderr\n${srv.output().stderr.slice(-3000)}`)
    assert.equal(cb.json, true)
    assert.equal(mock.deviceGrants, 1)

    const providers = await srv.providers()
    assert.ok(providers.connected?.includes(PROVIDER_ID), `connected: ${JSON.stringify(providers.connected)}`)
  } finally {
    await srv.close()
  }

  const issued = mock.tokens.filter((x) => x.via === 'device')
  assert.equal(issued.length, 1)
  const creds = oc.qwenCreds()
  assert.ok(creds, 'oauth_creds.json written to QWEN_HOME')
  assert.equal(creds.mode, 0o600)
  assert.deepEqual(creds.keys, DEVICE_KEY_ORDER)
  assert.equal(creds.raw, JSON.stringify(creds.json, null, 2), 'written like the CLI: 2-space JSON, no newline')
  assert.ok(creds.json.access_token === issued[0].access_token, 'access token from the device grant')
  assert.ok(creds.json.refresh_token === issued[0].refresh_token, 'refresh token from the device grant')
  assert.equal(creds.json.resource_url, mock.config.resourceUrl)

  const stored = oc.authJson()?.[PROVIDER_ID]
  assert.ok(stored, 'OpenCode stored the login')
  assert.equal(fs.statSync(oc.authFile).mode & 0o777, 0o600)
  assert.equal(stored.type, 'oauth')
  assert.ok(stored.access === creds.json.access_token, 'OpenCode has the same access token')
  assert.ok(stored.refresh === creds.json.refresh_token, 'OpenCode has the same refresh token')
  assert.equal(stored.expires, creds.json.expiry_date)
  assert.equal(stored.enterpriseUrl, mock.config.resourceUrl)

  const r = await oc.run('Say hello', { timeoutMs: 60_000 })
  assert.equal(r.code, 0, describeRun(r))
  assert.ok(r.stdout.includes(mock.config.replyText), describeRun(r))
  const chats = mock.requestsTo(CHAT)
  assert.ok(chats.length >= 1, 'the mock saw the chat requests')
  for (const req of chats) {
    assertQwenHeaders(req, creds.json.access_token)
    assert.equal(req.status, 200)
  }
  assert.equal(mock.refreshGrants, 0)
})

test('token expired between two runs: refreshed once, answer printed, OpenCode store updated', { timeout: TEST_TIMEOUT }, async (t) => {
  const { mock, oc } = await world(t)
  const first = mock.issueTokens()
  oc.writeQwenCreds(credsFile(first))
  oc.writeAuthJson(openCodeAuth(first))

  const r1 = await oc.run('Say hello', { timeoutMs: 60_000 })
  assert.equal(r1.code, 0, describeRun(r1))
  assert.ok(r1.stdout.includes(mock.config.replyText), describeRun(r1))
  assert.equal(mock.refreshGrants, 0)
  const chatsBefore = mock.requestsTo(CHAT).length

  // The access token runs out while OpenCode is not running.
  const expired = { ...first, expiry_date: Date.now() - 60_000 }
  oc.writeQwenCreds(credsFile(expired))
  oc.writeAuthJson(openCodeAuth(expired))
  mock.invalidateAccessTokens()

  const r2 = await oc.run('Say hello again', { timeoutMs: 60_000 })
  assert.equal(r2.code, 0, describeRun(r2))
  assert.ok(r2.stdout.includes(mock.config.replyText), describeRun(r2))
  assert.equal(mock.refreshGrants, 1, 'exactly one refresh grant')
  const refreshed = mock.tokens.filter((x) => x.via === 'refresh')
  assert.equal(refreshed.length, 1)
  const fresh = refreshed[0]

  // Refreshed before sending (expiry known), not after a 401.
  const chats = mock.requestsTo(CHAT).slice(chatsBefore)
  assert.ok(chats.length >= 1)
  for (const req of chats) {
    assert.equal(req.status, 200)
    assertQwenHeaders(req, fresh.access_token)
  }

  const creds = oc.qwenCreds()
  assert.ok(creds.json.access_token === fresh.access_token, 'oauth_creds.json has the new access token')
  assert.ok(creds.json.refresh_token === fresh.refresh_token, 'oauth_creds.json has the rotated refresh token')
  assert.equal(creds.mode, 0o600)
  assert.ok(creds.json.expiry_date > Date.now())

  const stored = oc.authJson()?.[PROVIDER_ID]
  assert.ok(stored?.access === fresh.access_token, 'OpenCode auth.json mirrors the new access token')
  assert.ok(stored?.refresh === fresh.refresh_token, 'OpenCode auth.json mirrors the new refresh token')
  assert.equal(stored.expires, creds.json.expiry_date)
})

test('a Qwen CLI login with an empty OpenCode store works without logging in', { timeout: TEST_TIMEOUT }, async (t) => {
  const { mock, oc } = await world(t)
  const login = mock.issueTokens()
  oc.writeQwenCreds(credsFile(login))
  assert.equal(oc.authJson(), null)

  const r = await oc.run('Say hello', { timeoutMs: 60_000 })
  assert.equal(r.code, 0, describeRun(r))
  assert.ok(r.stdout.includes(mock.config.replyText), describeRun(r))
  assert.equal(mock.deviceGrants, 0, 'no login')
  assert.equal(mock.refreshGrants, 0)
  for (const req of mock.requestsTo(CHAT)) assertQwenHeaders(req, login.access_token)
  // Adopted into OpenCode's store so its loader runs.
  const stored = oc.authJson()?.[PROVIDER_ID]
  assert.equal(stored?.type, 'oauth')
  assert.ok(stored.access === login.access_token, 'adopted access token')
})

/** A logged-in world (both stores seeded with a valid login). */
async function loggedIn(t, opts) {
  const w = await world(t, opts)
  const login = w.mock.issueTokens()
  w.oc.writeQwenCreds(credsFile(login))
  w.oc.writeAuthJson(openCodeAuth(login))
  return { ...w, login }
}

// `--title` skips OpenCode's separate title request, so one prompt is exactly one LLM call and the
// scripted answers below meet the request they are meant for.
const ONE_CALL = ['--title', 'e2e']

test('429 with Retry-After: 2 is waited out and answered', { timeout: TEST_TIMEOUT }, async (t) => {
  const { mock, oc } = await loggedIn(t)
  mock.enqueue429({ retryAfter: 2 })
  const r = await oc.run('Say hello', { timeoutMs: 60_000, args: ONE_CALL })
  assert.equal(r.code, 0, describeRun(r))
  assert.ok(r.stdout.includes(mock.config.replyText), describeRun(r))
  const chats = mock.requestsTo(CHAT)
  assert.equal(chats.length, 2, 'the 429 and one retry')
  assert.deepEqual(
    chats.map((c) => c.status),
    [429, 200],
  )
  const gap = chats[1].hr - chats[0].hr
  assert.ok(gap >= 2000, `retry came ${gap.toFixed(0)} ms after the 429 (Retry-After: 2)`)
})

test('daily quota 429: no retry, OpenCode shows our message', { timeout: TEST_TIMEOUT }, async (t) => {
  const { mock, oc } = await loggedIn(t)
  mock.enqueueQuota()
  const r = await oc.run('Say hello', { timeoutMs: 60_000, args: ONE_CALL })
  assert.ok(output(r).includes('daily free Qwen quota'), describeRun(r))
  assert.ok(!r.stdout.includes(mock.config.replyText), describeRun(r))
  const chats = mock.requestsTo(CHAT)
  assert.equal(chats.length, 1, `exactly one chat request reached the mock (saw ${chats.length})`)
  assert.equal(chats[0].status, 429)
})

test('401 twice: one refresh, then a clear "discontinued" message', { timeout: TEST_TIMEOUT }, async (t) => {
  const { mock, oc } = await loggedIn(t)
  mock.enqueue401()
  mock.enqueue401()
  const r = await oc.run('Say hello', { timeoutMs: 60_000, args: ONE_CALL })
  assert.ok(output(r).includes('discontinued'), describeRun(r))
  assert.ok(!r.stdout.includes(mock.config.replyText), describeRun(r))
  assert.equal(mock.refreshGrants, 1, 'exactly one forced refresh')
  const chats = mock.requestsTo(CHAT)
  assert.equal(chats.length, 2, `the request and one retry after the refresh (saw ${chats.length})`)
  assert.deepEqual(
    chats.map((c) => c.status),
    [401, 401],
  )
  const fresh = mock.tokens.find((x) => x.via === 'refresh')
  assert.ok(chats[1].headers.authorization === `Bearer ${fresh.access_token}`, 'the retry used the refreshed token')
  assert.equal(mock.requestsTo(TOKEN).length, 1)
})
