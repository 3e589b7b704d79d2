// Which HTTP client moves the bytes: the addon's own (`native`, the default under Node) or the runtime's
// `fetch` (`runtime`, the default under Bun), with the same native decisions either way. The rest of the
// fetch behaviour runs under both: `npm test` runs the fetch suites again with QWEN_FETCH_TRANSPORT=runtime.
// node:test; also runs under `bun test`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import api from '../api.cjs'
import { createRequire } from 'node:module'
import { startMockQwen } from './support/mock-qwen.mjs'
import { cleanupsAfterEach, throws, removeTempDir } from './support/helpers.mjs'

const require = createRequire(import.meta.url)
const CHAT = '/v1/chat/completions'
const NO_PACING = { minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0 }
const cleanups = cleanupsAfterEach()

async function setup() {
  const mock = await startMockQwen()
  cleanups.push(() => mock.close())
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-transport-'))
  cleanups.push(() => removeTempDir(tmp))
  const qwenHome = path.join(tmp, 'home')
  fs.mkdirSync(qwenHome, { mode: 0o700 })
  const issued = mock.issueTokens()
  fs.writeFileSync(path.join(qwenHome, 'oauth_creds.json'), JSON.stringify(issued), { mode: 0o600 })
  return { mock, issued, opts: { qwenHome, oauthBaseUrl: mock.url, ...NO_PACING }, url: `${mock.url}${CHAT}` }
}

/** Swap the runtime's fetch for one that records its calls (and still sends) while `fn` creates a client. */
function recordingFetch() {
  const real = globalThis.fetch
  const calls = []
  const answers = []
  globalThis.fetch = async (url, init) => {
    calls.push({ url: String(url), init })
    const res = await real(url, init)
    answers.push(res)
    return res
  }
  cleanups.push(() => {
    globalThis.fetch = real
  })
  return { calls, answers }
}

/** Run `fn` with QWEN_FETCH_TRANSPORT set to `value` (undefined: unset), restored afterwards. */
function withEnv(value, fn) {
  const before = process.env.QWEN_FETCH_TRANSPORT
  if (value === undefined) delete process.env.QWEN_FETCH_TRANSPORT
  else process.env.QWEN_FETCH_TRANSPORT = value
  try {
    return fn()
  } finally {
    if (before === undefined) delete process.env.QWEN_FETCH_TRANSPORT
    else process.env.QWEN_FETCH_TRANSPORT = before
  }
}

const chatInit = () => ({
  method: 'POST',
  headers: { 'content-type': 'application/json', authorization: 'Bearer from-the-caller', 'x-session-affinity': 'ses_1' },
  body: JSON.stringify({ model: 'coder-model', messages: [{ role: 'user', content: 'hi' }] }),
})

test('an unknown transport is refused, from the option or from QWEN_FETCH_TRANSPORT', () => {
  const e = throws(() => api.createClient({ qwenHome: os.tmpdir() }, { transport: 'carrier-pigeon' }))
  assert.equal(e.code, 'E_INVALID_ARG')
  assert.match(e.message, /"native" or "runtime"/)
  const fromEnv = withEnv('udp', () => throws(() => api.createClient({ qwenHome: os.tmpdir() })))
  assert.equal(fromEnv.code, 'E_INVALID_ARG')
  assert.match(fromEnv.message, /QWEN_FETCH_TRANSPORT/)
})

test('runtime transport: the runtime fetch carries the request with our headers, and its Response is handed back as is', async () => {
  const { mock, issued, opts, url } = await setup()
  const rec = recordingFetch()
  const client = api.createClient(opts, { transport: 'runtime' })
  const res = await client.fetch(url, chatInit())
  assert.equal(res.status, 200)
  assert.equal(rec.calls.length, 1)
  assert.equal(res, rec.answers[0], 'no copy, no wrapper: the runtime streams the body itself')
  const sent = new Headers(rec.calls[0].init.headers)
  assert.equal(sent.get('authorization'), `Bearer ${issued.access_token}`, 'our token, not the caller header')
  assert.equal(sent.get('x-dashscope-authtype'), 'qwen-oauth')
  assert.equal(sent.get('x-session-affinity'), null)
  assert.equal(rec.calls[0].init.redirect, 'manual', 'a redirect would carry the token elsewhere')
  const body = await res.json()
  assert.ok(body.choices)
  const seen = mock.requestsTo(CHAT)
  assert.equal(seen.length, 1)
  assert.equal(seen[0].headers.authorization, `Bearer ${issued.access_token}`)
  // The body that went out is the CLI-aligned one the native side built, not the caller's.
  assert.ok(JSON.parse(seen[0].rawBody).metadata, 'aligned body carries the CLI metadata')
})

test('native transport leaves the runtime fetch alone; under Node it is the default', async () => {
  const { mock, opts, url } = await setup()
  const rec = recordingFetch()
  const clients = [api.createClient(opts, { transport: 'native' })]
  if (typeof Bun === 'undefined') clients.push(withEnv(undefined, () => api.createClient(opts)))
  for (const client of clients) {
    const res = await client.fetch(url, chatInit())
    assert.equal(res.status, 200)
    assert.ok((await res.json()).choices)
  }
  assert.equal(rec.calls.length, 0)
  assert.equal(mock.requestsTo(CHAT).length, clients.length)
})

test('runtime transport: a refused token is refreshed once and the request sent again', async () => {
  const { mock, opts, url } = await setup()
  const rec = recordingFetch()
  mock.invalidateAccessTokens()
  const client = api.createClient(opts, { transport: 'runtime' })
  const res = await client.fetch(url, chatInit())
  assert.equal(res.status, 200)
  assert.equal(rec.calls.filter((c) => c.url === url).length, 2, 'the refused attempt and the one after the refresh')
  assert.equal(mock.refreshGrants, 1)
})

test('runtime transport: headers as a plain object, a Headers object or a Request go out the same', async () => {
  const { mock, opts, url } = await setup()
  const client = api.createClient(opts, { transport: 'runtime' })
  const body = JSON.stringify({ model: 'coder-model', messages: [{ role: 'user', content: 'hi' }] })
  const given = { 'Content-Type': 'application/json', 'X-Trace': '  padded  ', Authorization: 'Bearer from-the-caller' }
  const calls = [
    () => client.fetch(url, { method: 'post', headers: given, body }),
    () => client.fetch(new URL(url), { method: 'POST', headers: new Headers(given), body }),
    () => client.fetch(new Request(url, { method: 'POST', headers: given, body })),
  ]
  for (const call of calls) {
    const res = await call()
    assert.equal(res.status, 200)
    await res.arrayBuffer()
  }
  const seen = mock.requestsTo(CHAT)
  assert.equal(seen.length, 3)
  const shape = (r) => ({
    method: r.method,
    trace: r.headers['x-trace'],
    type: r.headers['content-type'],
    auth: r.headers.authorization,
    ua: r.headers['user-agent'],
    names: Object.keys(r.headers).filter((k) => k.startsWith('x-dashscope')).sort(),
  })
  assert.equal(seen[0].method, 'POST', 'the method is upper-cased as fetch does')
  assert.equal(seen[0].headers['x-trace'], 'padded', 'values are trimmed as Headers trims them')
  assert.notEqual(seen[0].headers.authorization, 'Bearer from-the-caller')
  assert.deepEqual(shape(seen[1]), shape(seen[0]))
  assert.deepEqual(shape(seen[2]), shape(seen[0]))
  assert.deepEqual(JSON.parse(seen[1].rawBody).messages, JSON.parse(seen[0].rawBody).messages)
})

test('runtime transport: a header holding a line break is refused before anything is sent', async () => {
  const { mock, opts, url } = await setup()
  const rec = recordingFetch()
  const client = api.createClient(opts, { transport: 'runtime' })
  for (const headers of [{ 'x-note': 'a\nauthorization\nBearer planted' }, { 'x-bad\r\nname': '1' }]) {
    const e = await client.fetch(url, { method: 'POST', headers, body: '{}' }).then(
      () => assert.fail('expected a refusal'),
      (err) => err,
    )
    assert.equal(e.code, 'E_INVALID_ARG')
    assert.match(e.message, /line break/)
  }
  assert.equal(rec.calls.length, 0)
  assert.equal(mock.requestsTo(CHAT).length, 0)
})

test('the module function `exchange` serves each client by its handle and refuses what it cannot take', async () => {
  const { opts, url } = await setup()
  const binding = require('../binding.cjs')
  const a = new binding.QwenClient(opts)
  const b = new binding.QwenClient(opts)
  assert.notEqual(a.handle, b.handle)
  const flat = ['content-type', 'application/json']
  const body = JSON.stringify({ model: 'coder-model', messages: [{ role: 'user', content: 'hi' }] })
  for (const client of [a, b]) {
    // `id NUL headers NUL body`: ids are the client's own, so both start at 1.
    const [id, headers, aligned] = binding.exchange(client.handle, url, 'POST', flat, body).split('\0')
    assert.equal(id, '1')
    // Checked without printing them: they hold the token.
    assert.ok(/^Authorization\nBearer \S/m.test(headers), 'the token goes in the headers')
    assert.equal(JSON.parse(aligned).messages[0].content, 'hi')
    client.finish(Number(id))
  }
  // A body the pipeline leaves as it is (not JSON) does not come back: the caller's own is sent.
  const plain = binding.exchange(a.handle, url, 'POST', ['content-type', 'text/plain'], 'just text').split('\0')
  assert.equal(plain.length, 3)
  assert.equal(plain[2], '')
  a.finish(Number(plain[0]))
  // Bytes go in as well as text.
  const [, , fromBytes] = binding.exchange(a.handle, url, 'POST', flat, new TextEncoder().encode(body)).split('\0')
  assert.equal(JSON.parse(fromBytes).messages[0].content, 'hi')
  // Text of every length and width comes through whole: names and values are read in one call when they fit a
  // small buffer, else asked for their length first; a character across that buffer's end must not be cut.
  for (const [n, pad] of [1, 12, 13, 14, 60].flatMap((n) => [0, 1, 2, 3].map((pad) => [n, pad]))) {
    const value = `${'a'.repeat(pad)}${'é€😀'.repeat(n)}z`
    const [id, headers] = binding.exchange(a.handle, `${url}?q=${value}`, 'POST', [...flat, 'x-wide', value], body).split('\0')
    assert.ok(headers.split('\n').includes(value), `a ${Buffer.byteLength(value)}-byte header value came back whole`)
    a.finish(Number(id))
  }
  assert.throws(() => binding.exchange(4096, url, 'POST', flat, body), /no client 4096/)
  assert.throws(() => binding.exchange(a.handle, 42, 'POST', flat, body), /url must be a string/)
  assert.throws(() => binding.exchange(a.handle, url, 'POST', 'x', body), /headers must be an array/)
  assert.throws(() => binding.exchange(a.handle, url, 'POST', [1, 2], body), /header name and value must be a string/)
  assert.throws(() => binding.exchange(a.handle, url, 'POST', flat, 42), /typed ?array|Uint8Array|expect/i)
})

test('runtime transport: a 429 is retried after its Retry-After (read only for such answers)', async () => {
  const { mock, opts, url } = await setup()
  const rec = recordingFetch()
  mock.enqueue429({ retryAfterMs: 30 })
  const client = api.createClient(opts, { transport: 'runtime' })
  const res = await client.fetch(url, chatInit())
  assert.equal(res.status, 200)
  assert.ok((await res.json()).choices)
  assert.equal(rec.calls.length, 2)
  const [first, second] = mock.requestsTo(CHAT)
  assert.ok(second.hr - first.hr >= 30, `retried ${second.hr - first.hr} ms after the 429, asked for 30`)
})

test('native transport: a long body nudges the engine to collect as it goes, so read chunks do not pile up', { skip: typeof Bun !== 'undefined' && 'V8 gc entries' }, async () => {
  const { PerformanceObserver, constants } = await import('node:perf_hooks')
  const { mock, opts, url } = await setup()
  // 32 MiB: half of the external-memory growth after which V8 would start collecting on its own.
  mock.enqueueStream({ chunks: Array(512).fill('x'.repeat(65536)), intervalMs: 0 })
  const client = api.createClient(opts, { transport: 'native' })
  let majors = 0
  const seen = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++
  })
  seen.observe({ entryTypes: ['gc'] })
  cleanups.push(() => seen.disconnect())
  const res = await client.fetch(url, { ...chatInit(), body: JSON.stringify({ model: 'coder-model', stream: true, messages: [] }) })
  let bytes = 0
  for await (const chunk of res.body) bytes += chunk.byteLength
  assert.ok(bytes > 32 * 1048576, `read ${bytes} bytes`)
  // gc entries are queued to the observer: let the queue drain (an event-loop turn, not a timed wait).
  await new Promise((resolve) => setImmediate(resolve))
  await new Promise((resolve) => setImmediate(resolve))
  assert.ok(majors >= 4, `${majors} full collections while 32 MiB went by (a nudge every 4 MiB)`)
})
