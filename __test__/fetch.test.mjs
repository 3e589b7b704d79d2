// The Rust request pipeline through the JS fetch adapter against the mock Qwen server: CLI headers,
// streaming, 429 / quota / 401 / 5xx handling, the trust check, and aborts at every stage.
// node:test; also runs under `bun test`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import net from 'node:net'
import api from '../api.cjs'
import { startMockQwen } from './support/mock-qwen.mjs'
import { cleanupsAfterEach, rejection, until, removeTempDir } from './support/helpers.mjs'

const CHAT = '/v1/chat/completions'
const NO_PACING = { minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0 }
const API_KEY = 'sk-test-pipeline-key-0123456789'

const cleanups = cleanupsAfterEach()

/** A mock, a private QWEN_HOME holding valid OAuth credentials issued by the mock, and a client on them. */
async function setup({ config = {}, options = {}, apiKey } = {}) {
  const mock = await startMockQwen({ config: { apiKeys: [API_KEY], ...config } })
  cleanups.push(() => mock.close())
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-fetch-'))
  cleanups.push(() => removeTempDir(tmp))
  const qwenHome = path.join(tmp, 'qwen-home')
  fs.mkdirSync(qwenHome, { mode: 0o700 })
  const issued = mock.issueTokens()
  const creds = {
    access_token: issued.access_token,
    refresh_token: issued.refresh_token,
    token_type: issued.token_type,
    resource_url: issued.resource_url,
    expiry_date: issued.expiry_date,
  }
  fs.writeFileSync(path.join(qwenHome, 'oauth_creds.json'), JSON.stringify(creds, null, 2), { mode: 0o600 })
  const opts = { qwenHome, oauthBaseUrl: mock.url, ...NO_PACING, ...options }
  const client = api.createClient(opts, apiKey ? { apiKey } : {})
  return { mock, client, qwenHome, issued, url: `${mock.url}${CHAT}` }
}

const chatInit = (extra = {}) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ model: 'coder-model', stream: extra.stream ?? false, messages: [{ role: 'user', content: 'hi' }] }),
  ...extra,
})

const chatRequests = (mock) => mock.requestsTo(CHAT)
const expectedUA = (v = '0.24.4') => `QwenCode/${v} (${process.platform}; ${process.arch})`

test('OAuth: sends the Qwen Code CLI headers and the token, strips OpenCode headers Qwen refuses', async () => {
  const { mock, client, url, issued } = await setup()
  const res = await client.fetch(
    url,
    chatInit({
      headers: {
        'Content-Type': 'application/json',
        'x-session-affinity': 'ses_123',
        'OpenAI-Beta': 'assistants=v2',
        Authorization: 'Bearer opencode-placeholder',
        'User-Agent': 'ai-sdk/openai-compatible',
        'x-custom': 'kept',
      },
    }),
  )
  assert.equal(res.status, 200)
  assert.equal(res.statusText, 'OK')
  assert.match(res.headers.get('content-type'), /application\/json/)
  const json = await res.json()
  assert.equal(json.choices[0].message.content, 'Hello from the mock Qwen server!')

  const [rec] = chatRequests(mock)
  const h = rec.headers
  assert.equal(h['user-agent'], expectedUA())
  if (process.platform === 'linux' && process.arch === 'x64') assert.equal(h['user-agent'], 'QwenCode/0.24.4 (linux; x64)')
  assert.equal(h['x-dashscope-useragent'], expectedUA())
  assert.equal(h['x-dashscope-cachecontrol'], 'enable')
  assert.equal(h['x-dashscope-authtype'], 'qwen-oauth')
  assert.ok(h.authorization === `Bearer ${issued.access_token}`, 'Authorization carries the stored access token')
  assert.equal(h.accept, 'application/json')
  assert.equal(h['content-type'], 'application/json')
  assert.equal(h['x-custom'], 'kept')
  assert.equal(h['x-session-affinity'], undefined)
  assert.equal(h['openai-beta'], undefined)
  assert.equal(rec.json.model, 'coder-model')
})

test('API key: the key is the bearer, cliVersion is honoured, auth type openai', async () => {
  const { mock, client, url } = await setup({ apiKey: API_KEY, options: { cliVersion: '9.8.7' } })
  const res = await client.fetch(url, chatInit({ headers: { accept: 'application/json, text/event-stream' } }))
  assert.equal(res.status, 200)
  await res.arrayBuffer()
  const [rec] = chatRequests(mock)
  assert.ok(rec.headers.authorization === `Bearer ${API_KEY}`, 'Authorization carries the API key')
  assert.equal(rec.headers['user-agent'], expectedUA('9.8.7'))
  assert.equal(rec.headers['x-dashscope-authtype'], 'openai')
  assert.equal(rec.headers.accept, 'application/json, text/event-stream', "the caller's Accept is kept")
  assert.equal(mock.refreshGrants, 0)
})

test('SSE streams incrementally: the first chunk arrives while the server is still streaming; cancel closes upstream', async () => {
  const { mock, client, url } = await setup()
  // An endless stream only ever ends when the client goes away: any chunk we get was not buffered to the end.
  mock.enqueueStream({ chunks: ['tick '], intervalMs: 20, endless: true })
  const res = await client.fetch(url, chatInit({ stream: true }))
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('content-type'), 'text/event-stream')
  const reader = res.body.getReader()
  const decoder = new TextDecoder()
  let text = ''
  while (!text.includes('tick')) {
    const { value, done } = await reader.read()
    assert.equal(done, false, 'stream ended early')
    text += decoder.decode(value, { stream: true })
  }
  assert.match(text, /^data: \{/)
  assert.equal(mock.disconnects, 0, 'the server is still streaming')
  await reader.cancel()
  const d = await mock.waitForDisconnect()
  assert.equal(d.path, CHAT)
})

test('a finite SSE stream is delivered completely and in order', async () => {
  const { client, url } = await setup()
  const res = await client.fetch(url, chatInit({ stream: true }))
  const text = await res.text()
  const events = text.split('\n\n').filter(Boolean)
  assert.equal(events.at(-1), 'data: [DONE]')
  const content = events
    .slice(0, -1)
    .map((e) => JSON.parse(e.slice('data: '.length)))
    .map((e) => e.choices[0]?.delta?.content ?? '')
    .join('')
  assert.equal(content, 'Hello from the mock Qwen server!')
})

test('429 with Retry-After: 2 is retried after at least 2000 ms and answered', async () => {
  const { mock, client, url } = await setup()
  mock.enqueue429({ retryAfter: 2 })
  const res = await client.fetch(url, chatInit())
  assert.equal(res.status, 200)
  await res.json()
  const recs = chatRequests(mock)
  assert.deepEqual(recs.map((r) => r.status), [429, 200])
  const gap = recs[1].hr - recs[0].hr
  assert.ok(gap >= 2000, `retry came ${gap.toFixed(0)} ms after the 429, must be >= 2000 ms`)
})

test('429 retry-after-ms is honoured; after maxRetries the last 429 is returned with its body', async () => {
  const { mock, client, url } = await setup({ options: { maxRetries: 1 } })
  mock.enqueue429({ retryAfterMs: 300 })
  mock.enqueue429({ retryAfterMs: 300, body: { error: { code: 'rate_limit_exceeded', message: 'second 429' } } })
  const res = await client.fetch(url, chatInit())
  assert.equal(res.status, 429)
  assert.equal(res.headers.get('retry-after-ms'), '300')
  const body = await res.json()
  assert.equal(body.error.message, 'second 429')
  const recs = chatRequests(mock)
  assert.equal(recs.length, 2)
  assert.ok(recs[1].hr - recs[0].hr >= 300, 'waited retry-after-ms')
})

test('quota 429 ("Free allocated quota exceeded") fails at once with E_QUOTA_EXHAUSTED, one request only', async () => {
  const { mock, client, url } = await setup()
  mock.enqueueQuota()
  const err = await rejection(client.fetch(url, chatInit()))
  assert.equal(err.code, 'E_QUOTA_EXHAUSTED')
  assert.match(err.message, /quota/i)
  assert.match(err.message, /Beijing/)
  assert.equal(chatRequests(mock).length, 1)
})

test('401 once: one forced refresh, the retry carries the new token and succeeds', async () => {
  const { mock, client, url, issued } = await setup()
  mock.enqueue401()
  const res = await client.fetch(url, chatInit())
  assert.equal(res.status, 200)
  await res.json()
  assert.equal(mock.refreshGrants, 1)
  const recs = chatRequests(mock)
  assert.deepEqual(recs.map((r) => r.status), [401, 200])
  const refreshed = mock.tokens.find((t) => t.via === 'refresh')
  assert.ok(recs[0].headers.authorization === `Bearer ${issued.access_token}`, 'first try used the stored token')
  assert.ok(recs[1].headers.authorization === `Bearer ${refreshed.access_token}`, 'retry used the refreshed token')
})

test('401 twice: E_TOKEN_REFUSED after exactly one refresh', async () => {
  const { mock, client, url } = await setup()
  mock.enqueue401()
  mock.enqueue401()
  const err = await rejection(client.fetch(url, chatInit()))
  assert.equal(err.code, 'E_TOKEN_REFUSED')
  assert.match(err.message, /2026-04-15/)
  assert.equal(mock.refreshGrants, 1)
  assert.equal(chatRequests(mock).length, 2)
  for (const t of mock.tokens) assert.ok(!err.message.includes(t.access_token), 'no token in the message')
})

test('401, then 429, then 200: the refresh happens once, the rate-limit retry reuses the new token', async () => {
  const { mock, client, url } = await setup()
  mock.enqueue401()
  mock.enqueue429({ retryAfterMs: 50 })
  const res = await client.fetch(url, chatInit())
  assert.equal(res.status, 200)
  await res.json()
  assert.equal(mock.refreshGrants, 1)
  const recs = chatRequests(mock)
  assert.deepEqual(recs.map((r) => r.status), [401, 429, 200])
  assert.ok(recs[1].headers.authorization === recs[2].headers.authorization, 'same refreshed token on both retries')
})

test('API key: a 401 fails with E_KEY_REFUSED, without refresh or retry', async () => {
  const { mock, client, url } = await setup({ apiKey: API_KEY })
  mock.enqueue401()
  const err = await client.fetch(url, chatInit()).then(() => null, (e) => e)
  assert.equal(err?.code, 'E_KEY_REFUSED')
  assert.equal(mock.refreshGrants, 0)
  assert.equal(chatRequests(mock).length, 1)
})

test('503 then 200: retried and answered', async () => {
  const { mock, client, url } = await setup()
  mock.enqueue5xx(503)
  const res = await client.fetch(url, chatInit())
  assert.equal(res.status, 200)
  await res.json()
  assert.deepEqual(chatRequests(mock).map((r) => r.status), [503, 200])
})

test('5xx beyond maxRetries: the last 5xx response is returned', async () => {
  const { mock, client, url } = await setup({ options: { maxRetries: 1 } })
  mock.enqueue5xx(500)
  mock.enqueue5xx(502)
  const res = await client.fetch(url, chatInit())
  assert.equal(res.status, 502)
  assert.equal((await res.json()).error.message, 'mock upstream error 502')
  assert.equal(chatRequests(mock).length, 2)
})

test('connection refused: bounded retries, then E_NETWORK', async () => {
  const { client } = await setup({ options: { maxRetries: 1 } })
  // A port that was just free: nothing listens there.
  const srv = net.createServer()
  await new Promise((r) => srv.listen(0, '127.0.0.1', r))
  const port = srv.address().port
  await new Promise((r) => srv.close(r))
  const err = await rejection(client.fetch(`http://127.0.0.1:${port}${CHAT}`, chatInit()))
  assert.equal(err.code, 'E_NETWORK')
  assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}`))
})

test('untrusted base URL: E_UNTRUSTED_HOST before any token is fetched or sent', async () => {
  const { mock, client } = await setup({ options: { trustedHosts: ['api.example.com'] } })
  for (const bad of ['https://evil.example/v1/chat/completions?x=1', 'http://portal.qwen.ai/v1/chat/completions']) {
    const err = await rejection(client.fetch(bad, chatInit()))
    assert.equal(err.code, 'E_UNTRUSTED_HOST')
    assert.ok(!err.message.includes('x=1'), 'no query in the message')
  }
  assert.equal(mock.requests.length, 0, 'neither the API nor the token endpoint was contacted')
})

test('a server cut mid-stream is not replayed: the body errors and the mock saw one request', async () => {
  const { mock, client, url } = await setup()
  mock.enqueueStream({ chunks: ['a', 'b', 'c', 'd'], intervalMs: 5, cutAfter: 2 })
  const res = await client.fetch(url, chatInit({ stream: true }))
  assert.equal(res.status, 200)
  const err = await rejection(res.text())
  assert.ok(err instanceof Error)
  assert.equal(chatRequests(mock).length, 1)
})

test('abort during a pacing wait: rejects with AbortError at once, nothing reaches the mock, the slot is given back', async () => {
  const { mock, client, url, qwenHome } = await setup({ options: { minIntervalMs: 60_000, jitterMinMs: 0, jitterMaxMs: 0 } })
  // The first request finds an idle machine and goes at once; it books the next minute.
  const first = await client.fetch(url, chatInit())
  assert.equal(first.status, 200)
  await first.json()
  const statePath = path.join(qwenHome, 'opencode_qwen_pacing.json')
  // Rust rewrites the file in place under an OS lock; an unlocked reader may catch it half-written.
  const state = () => {
    try {
      return JSON.parse(fs.readFileSync(statePath, 'utf8'))
    } catch {
      return { next_start_ms: NaN }
    }
  }
  const booked = await until(() => state().next_start_ms, 'the pacing state')

  const ac = new AbortController()
  const second = client.fetch(url, chatInit({ signal: ac.signal }))
  second.catch(() => {})
  // Wait until the second request holds a slot a minute out, i.e. it is sleeping in the pacing wait.
  await until(() => state().next_start_ms >= booked + 60_000, 'the second slot to be reserved')
  ac.abort()
  const err = await rejection(second)
  assert.equal(err.name, 'AbortError')
  assert.equal(chatRequests(mock).length, 1, 'the aborted request never reached the mock')
  // The unused slot is released, so the next request does not queue behind a ghost.
  await until(() => state().next_start_ms === booked, 'the slot to be given back')
  if (process.platform !== 'win32') assert.equal(fs.statSync(statePath).mode & 0o777, 0o600)
})

test('abort during a Retry-After wait ends the wait at once', async () => {
  const { mock, client, url } = await setup()
  mock.enqueue429({ retryAfter: 50 })
  const ac = new AbortController()
  const p = client.fetch(url, chatInit({ signal: ac.signal }))
  p.catch(() => {})
  await mock.waitForRequests(CHAT, 1)
  ac.abort()
  const err = await rejection(p)
  assert.equal(err.name, 'AbortError')
  assert.equal(chatRequests(mock).length, 1)
})

test('abort mid-stream: the body rejects and the mock sees the disconnect', async () => {
  const { mock, client, url } = await setup()
  mock.enqueueStream({ chunks: ['x'], intervalMs: 20, endless: true })
  const ac = new AbortController()
  const res = await client.fetch(url, chatInit({ stream: true, signal: ac.signal }))
  const reader = res.body.getReader()
  const first = await reader.read()
  assert.equal(first.done, false)
  ac.abort()
  const d = await mock.waitForDisconnect()
  assert.equal(d.path, CHAT)
  const err = await rejection(
    (async () => {
      for (;;) if ((await reader.read()).done) return
    })(),
  )
  assert.ok(err instanceof Error)
})

test('an already aborted signal rejects without any request', async () => {
  const { mock, client, url } = await setup()
  const ac = new AbortController()
  ac.abort()
  const err = await rejection(client.fetch(url, chatInit({ signal: ac.signal })))
  assert.equal(err.name, 'AbortError')
  assert.equal(mock.requests.length, 0)
})
