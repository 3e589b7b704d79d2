// The local quota view: requests counted machine-wide in the pacing state file (real processes sharing one
// QWEN_HOME), the Beijing-midnight reset with an injected clock (QWEN_OAUTH_FAKE_NOW_MS, set when spawning),
// the last 429 with its reason, and the plugin's 80 % / 95 % toasts. node:test; also runs under `bun test`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import api from '../api.cjs'
import { QwenCodePlugin } from '../index.js'
import { startMockQwen } from './support/mock-qwen.mjs'
import { cleanupsAfterEach } from './support/helpers.mjs'
import { startGoChild } from './support/children.mjs'

const CHAT = '/v1/chat/completions'
const API_KEY = 'sk-sp-test-quota-key-0123456789'
const NO_PACING = { minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0, maxRetries: 0 }
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'support', 'quota-child.mjs')
const STATE = 'opencode_qwen_pacing.json'

/** Epoch ms of a Beijing wall-clock time (UTC+8, no DST). */
const beijing = (y, mo, d, h, mi, s) => Date.UTC(y, mo - 1, d, h - 8, mi, s)

const cleanups = cleanupsAfterEach()

async function setup(config = {}) {
  const mock = await startMockQwen({ config: { apiKeys: [API_KEY], ...config } })
  cleanups.push(() => mock.close())
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-quota-'))
  cleanups.push(() => {
    // Counts of this process are written in the background (pacing off); let them land before removing the dir.
    api.flushQuota()
    fs.rmSync(tmp, { recursive: true, force: true })
  })
  const qwenHome = path.join(tmp, 'qwen-home')
  return { mock, tmp, qwenHome, url: `${mock.url}${CHAT}` }
}

/** A child with its own quota clock; `ready` once it has loaded the addon, `result` its JSON line. */
function startChild(args, fakeNowMs, extraEnv = {}) {
  const env = { ...extraEnv, QWEN_OAUTH_FAKE_NOW_MS: fakeNowMs === undefined ? undefined : String(fakeNowMs) }
  const child = startGoChild(CHILD, args, { env, cleanups })
  const result = child.done.then(({ code, stdout, stderr }) => {
    assert.equal(code, 0, `child ${args.id} failed: ${stderr}`)
    return JSON.parse(stdout.trim().split('\n').at(-1))
  })
  return { ready: child.ready, go: child.go, result }
}

const runChild = (args, fakeNowMs, extraEnv) => startChild({ ...args, waitForGo: false }, fakeNowMs, extraEnv).result

// ─── counts across processes ──────────────────────────────────────────────────────────────────────

test('3 processes x 10 requests, pacing off: today and this minute are 30, counted in the shared state file', { timeout: 60_000 }, async () => {
  // Each answer takes 20 ms, so each process's 10 requests span 200 ms: far longer than the processes can
  // be apart in receiving "go", so their requests overlap however busy the machine.
  const { mock, qwenHome, url } = await setup({ chatDelayMs: 20 })
  // Early in a minute (and far from midnight), so "this minute" cannot roll over during the test.
  const t0 = beijing(2026, 5, 1, 12, 0, 1)
  const options = { qwenHome, ...NO_PACING }
  const children = [0, 1, 2].map((id) => startChild({ url, apiKey: API_KEY, count: 10, id, options, waitForGo: true }, t0))
  await Promise.all(children.map((c) => c.ready))
  for (const c of children) c.go()
  const results = await Promise.all(children.map((c) => c.result))

  for (const r of results) assert.deepEqual(r.statuses, Array(10).fill(200))
  assert.equal(mock.requestsTo(CHAT).length, 30)
  // The processes really ran at the same time: their requests interleave at the mock.
  const order = mock.requestsTo(CHAT).map((r) => r.headers['x-quota-child']).join('')
  assert.ok([...order].some((c, i) => i > 0 && c !== order[i - 1] && order.indexOf(c) < i), `interleaved: ${order}`)

  const status = (await runChild({ url, apiKey: API_KEY, count: 0, id: 'status', options }, t0)).after
  assert.equal(status.today, 30)
  assert.equal(status.minute, 30)
  assert.equal(status.dailyLimit, 1000)
  assert.equal(status.dayResetsAt, beijing(2026, 5, 2, 0, 0, 0))
  assert.equal(status.last429, null)
  // Whichever process counted last saw the total; no process saw more.
  const seen = results.map((r) => r.seen.today)
  assert.equal(Math.max(...seen), 30)
  for (const r of results) assert.ok(r.seen.today >= 10, 'each process saw at least its own requests')

  const state = JSON.parse(fs.readFileSync(path.join(qwenHome, STATE), 'utf8'))
  assert.equal(state.quota.today, 30)
  assert.equal(state.quota.day_start_ms, beijing(2026, 5, 1, 0, 0, 0))
  assert.equal(state.next_start_ms, 0, 'pacing off: no slots were reserved')
  if (process.platform !== 'win32') assert.equal(fs.statSync(path.join(qwenHome, STATE)).mode & 0o777, 0o600)
})

test('a QWEN_HOME removed while a process runs stays removed: the counts left at exit are dropped, not written', { timeout: 60_000 }, async () => {
  // Pacing off, so the last request's count is only in memory when the child exits: its exit flush (or its
  // background writer, whichever comes first) used to create the directory again with the state file in it.
  const { mock, qwenHome, url } = await setup()
  const options = { qwenHome, ...NO_PACING }
  const r = await runChild({ url, apiKey: API_KEY, count: 3, id: 'rm', options, removeHome: true })
  assert.deepEqual(r.statuses, [200, 200, 200, 200])
  assert.equal(mock.requestsTo(CHAT).length, 4)
  assert.ok(!fs.existsSync(qwenHome), 'QWEN_HOME was not created again')
})

test('with pacing on, requests are counted in the same locked step that gives them their slot', { timeout: 60_000 }, async () => {
  const { mock, qwenHome, url } = await setup()
  const t0 = beijing(2026, 5, 1, 12, 0, 1)
  const options = { qwenHome, minIntervalMs: 30, jitterMinMs: 0, jitterMaxMs: 0, maxRetries: 0 }
  const children = [0, 1].map((id) => startChild({ url, apiKey: API_KEY, count: 5, id, options, waitForGo: true }, t0))
  await Promise.all(children.map((c) => c.ready))
  for (const c of children) c.go()
  const results = await Promise.all(children.map((c) => c.result))
  assert.equal(mock.requestsTo(CHAT).length, 10)
  assert.equal(Math.max(...results.map((r) => r.seen.today)), 10)
  const state = JSON.parse(fs.readFileSync(path.join(qwenHome, STATE), 'utf8'))
  assert.equal(state.quota.today, 10)
  assert.ok(state.last_start_ms > 0, 'the pacing slots were used')
})

test('across Beijing midnight (23:59:30 → 00:00:30 +08): today resets, this minute is the new calendar minute', { timeout: 60_000 }, async () => {
  const { qwenHome, url } = await setup()
  const options = { qwenHome, ...NO_PACING }
  const evening = beijing(2026, 5, 1, 23, 59, 30)
  const night = beijing(2026, 5, 2, 0, 0, 30)

  const a = await runChild({ url, apiKey: API_KEY, count: 3, id: 'a', options }, evening)
  assert.deepEqual(a.statuses, [200, 200, 200])
  assert.equal(a.after.today, 3)
  assert.equal(a.after.minute, 3)
  assert.equal(a.after.dayResetsAt, beijing(2026, 5, 2, 0, 0, 0), 'the day of 23:59:30 ends at the next 00:00 +08 (16:00 UTC)')
  assert.equal(a.after.dayResetsAt, Date.UTC(2026, 4, 1, 16, 0, 0))

  // 60 s later by the clock: a new Beijing day. Yesterday's 3 are not today's, and not this minute's either
  // (the minute is the calendar minute 00:00, not the last 60 seconds).
  const b = await runChild({ url, apiKey: API_KEY, count: 2, id: 'b', options }, night)
  assert.equal(b.before.today, 0)
  assert.equal(b.before.minute, 0)
  assert.equal(b.after.today, 2)
  assert.equal(b.after.minute, 2)
  assert.equal(b.after.dayResetsAt, beijing(2026, 5, 3, 0, 0, 0))
  const state = JSON.parse(fs.readFileSync(path.join(qwenHome, STATE), 'utf8'))
  assert.equal(state.quota.day_start_ms, beijing(2026, 5, 2, 0, 0, 0))
  assert.equal(state.quota.today, 2)

  // 15:59:59 UTC on 2026-05-02 is still that Beijing day; a second later the next one begins.
  const lastSecond = await runChild({ url, apiKey: API_KEY, count: 0, id: 'c', options }, Date.UTC(2026, 4, 2, 15, 59, 58))
  assert.equal(lastSecond.after.today, 2)
  const nextDay = await runChild({ url, apiKey: API_KEY, count: 0, id: 'd', options }, Date.UTC(2026, 4, 2, 16, 0, 0))
  assert.equal(nextDay.after.today, 0)
  assert.equal(nextDay.after.dayResetsAt, beijing(2026, 5, 4, 0, 0, 0))
})

// ─── the last 429 ─────────────────────────────────────────────────────────────────────────────────

test('the last 429 is recorded with its reason: rate limit (with the wait asked for), then quota', async () => {
  const { mock, qwenHome, url } = await setup()
  const options = { qwenHome, ...NO_PACING }
  assert.equal(api.quotaStatus(options).last429, null)
  assert.ok(!fs.existsSync(qwenHome), 'reading the quota view creates nothing')

  const client = api.createClient(options, { apiKey: API_KEY })
  const init = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"model":"coder-model"}' }
  const t1 = Date.now()
  mock.enqueue429({ retryAfter: 7 })
  const res = await client.fetch(url, init)
  assert.equal(res.status, 429)
  await res.arrayBuffer()
  const t2 = Date.now()
  let last = api.quotaStatus(options).last429
  assert.equal(last.reason, 'rate_limit')
  assert.equal(last.retryAfterMs, 7000)
  assert.ok(last.at >= t1 && last.at <= t2, 'recorded when it happened')
  assert.deepEqual(client.quota().last429, last, 'the client saw the same')

  mock.enqueueQuota()
  await assert.rejects(client.fetch(url, init), (err) => err.code === 'E_QUOTA_EXHAUSTED')
  last = api.quotaStatus(options).last429
  assert.equal(last.reason, 'quota')
  assert.equal(last.retryAfterMs, null)
  assert.ok(last.at >= t2)
  // Both 429s went out, so both count.
  assert.equal(api.quotaStatus(options).today, 2)
  assert.equal(mock.requestsTo(CHAT).length, 2)
})

test('options: dailyLimit must be a number; QWEN_DAILY_LIMIT is the fallback', async () => {
  const { qwenHome } = await setup()
  assert.equal(api.quotaStatus({ qwenHome, dailyLimit: 10 }).dailyLimit, 10)
  assert.throws(() => api.quotaStatus({ qwenHome, dailyLimit: '10' }), (e) => e.code === 'E_INVALID_ARG' && /dailyLimit/.test(e.message))
  assert.throws(() => api.quotaStatus({ qwenHome, dailyLimit: -1 }), (e) => e.code === 'E_INVALID_ARG' && /dailyLimit/.test(e.message))
  const child = (extraEnv, options) => runChild({ url: 'http://127.0.0.1:9/', count: 0, id: 'env', options }, undefined, extraEnv)
  assert.equal((await child({ QWEN_DAILY_LIMIT: '50' }, { qwenHome })).after.dailyLimit, 50)
  assert.equal((await child({ QWEN_DAILY_LIMIT: '50' }, { qwenHome, dailyLimit: 20 })).after.dailyLimit, 20, 'the option wins')
})

// ─── the plugin's toasts ──────────────────────────────────────────────────────────────────────────

/** The plugin with a fake OpenCode client recording toasts; the loader of a stored API key pointing at the mock. */
async function pluginFetch(mock, options, tmp) {
  const toasts = []
  const input = {
    client: {
      auth: { set: async () => ({ data: true }) },
      tui: { showToast: async (arg) => (toasts.push(arg.body), { data: true }) },
    },
    directory: '/',
    worktree: '/',
  }
  // No XDG data of the real user: the plugin looks for OpenCode's auth.json at start-up.
  const prev = process.env.XDG_DATA_HOME
  process.env.XDG_DATA_HOME = path.join(tmp, 'xdg-data')
  let hooks
  try {
    hooks = await QwenCodePlugin(input, options)
  } finally {
    if (prev === undefined) delete process.env.XDG_DATA_HOME
    else process.env.XDG_DATA_HOME = prev
  }
  const loaded = await hooks.auth.loader(async () => ({ type: 'api', key: API_KEY, metadata: { endpoint: `${mock.url}/v1` } }), {
    options: {},
  })
  const chat = async () => {
    const res = await loaded.fetch(`${mock.url}${CHAT}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer opencode-oauth-dummy-key' },
      body: JSON.stringify({ model: 'coder-model', messages: [{ role: 'user', content: 'hi' }] }),
    })
    await res.arrayBuffer()
    // Toasts are shown without blocking the request: let the microtasks that show them run.
    await new Promise((r) => setImmediate(r))
    return res.status
  }
  return { toasts, chat }
}

const quotaToasts = (toasts) => toasts.filter((t) => /requests today/.test(t.message))

test('plugin: 80 % and 95 % of dailyLimit (10) each give one toast, and no more that day', async () => {
  const { mock, qwenHome, tmp } = await setup()
  const { toasts, chat } = await pluginFetch(mock, { qwenHome, ...NO_PACING, dailyLimit: 10 }, tmp)
  const after = []
  for (let i = 1; i <= 12; i++) {
    assert.equal(await chat(), 200)
    after.push(quotaToasts(toasts).length)
  }
  // Requests 1–7: none; 8 (80 %): the first; 10 (≥ 9.5, 95 %): the second; 11 and 12: nothing new.
  assert.deepEqual(after, [0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2])
  const [at80, at95] = quotaToasts(toasts)
  assert.equal(at80.variant, 'info')
  assert.match(at80.message, /^8 of 10 Qwen requests today from this machine \(80 %\)/)
  assert.match(at80.message, /00:00 Beijing time/)
  assert.equal(at95.variant, 'warning')
  assert.match(at95.message, /^10 of 10 Qwen requests today .*\(100 %\)/)
  assert.equal(at95.title, 'Qwen Code')
  assert.equal(toasts.length, 2, 'no other toasts')
})

test('plugin: a day that is already past 95 % gives only the 95 % toast; dailyLimit 0 gives none', async () => {
  const { mock, qwenHome, tmp, url } = await setup()
  // 9 requests made elsewhere today (another tool on this machine).
  const other = api.createClient({ qwenHome, ...NO_PACING }, { apiKey: API_KEY })
  for (let i = 0; i < 9; i++) {
    const r = await other.fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
    await r.arrayBuffer()
  }
  const { toasts, chat } = await pluginFetch(mock, { qwenHome, ...NO_PACING, dailyLimit: 10 }, tmp)
  await chat()
  await chat()
  assert.deepEqual(quotaToasts(toasts).map((t) => t.variant), ['warning'])
  assert.match(quotaToasts(toasts)[0].message, /^10 of 10/)

  const off = await pluginFetch(mock, { qwenHome, ...NO_PACING, dailyLimit: 0 }, tmp)
  await off.chat()
  assert.equal(off.toasts.length, 0)
})
