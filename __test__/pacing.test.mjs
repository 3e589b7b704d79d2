// Machine-wide pacing across real processes: three children share one QWEN_HOME (hence one pacing state
// file) and race for the API of one mock; every two request starts must be at least the configured gap apart.
// node:test.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import api from '../api.cjs'
import { startMockQwen } from './support/mock-qwen.mjs'
import { cleanupsAfterEach } from './support/helpers.mjs'
import { startGoChild } from './support/children.mjs'

const CHAT = '/v1/chat/completions'
const API_KEY = 'sk-test-pacing-key-0123456789'
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'support', 'pacing-child.mjs')

const cleanups = cleanupsAfterEach()

async function setup() {
  const mock = await startMockQwen({ config: { apiKeys: [API_KEY] } })
  cleanups.push(() => mock.close())
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-pacing-'))
  cleanups.push(() => {
    // Counts of this process are written in the background (pacing off); let them land before removing the dir.
    api.flushQuota()
    fs.rmSync(tmp, { recursive: true, force: true })
  })
  // Not created yet: the pacing code must create it (0700).
  const qwenHome = path.join(tmp, 'qwen-home')
  return { mock, qwenHome, url: `${mock.url}${CHAT}` }
}

/** Start a child; `ready` once it has loaded the addon and waits for "go". */
const startChild = (args) => startGoChild(CHILD, args, { cleanups })

const gapsOf = (times) => times.slice(1).map((t, i) => t - times[i])

// ~8 s of paced requests: longer than bun test's default 5 s timeout.
test('3 processes x 10 requests: every two request starts are at least the configured gap apart', { timeout: 60_000 }, async () => {
  const { mock, qwenHome, url } = await setup()
  const MIN = 200
  // Fixed (min = max), so the configured gap is exactly MIN + JITTER. The logged starts must keep all of it;
  // at the mock, arrivals keep at least MIN: the margin is the time from a granted turn to the bytes on the
  // socket, which under QWEN_FETCH_TRANSPORT=runtime passes a promise and the JS event loop (seen up to 50 ms
  // on a loaded 2-core machine, where a 20 ms margin failed 2 runs in ~10).
  const JITTER = 60
  const options = { qwenHome, minIntervalMs: MIN, jitterMinMs: JITTER, jitterMaxMs: JITTER, maxRetries: 0 }
  const children = [0, 1, 2].map((id) => startChild({ url, apiKey: API_KEY, count: 10, id, options }))
  await Promise.all(children.map((c) => c.ready))
  for (const c of children) c.go()
  const results = await Promise.all(children.map((c) => c.done))

  for (const [i, r] of results.entries()) {
    assert.equal(r.code, 0, `child ${i} failed: ${r.stderr}`)
    const line = JSON.parse(r.stdout.trim().split('\n').at(-1))
    assert.deepEqual(line.statuses, Array(10).fill(200))
  }

  // At the mock: arrival of each request (its headers parsed), in arrival order.
  const recs = mock.requestsTo(CHAT)
  assert.equal(recs.length, 30)
  const arrivals = recs.map((r) => r.hr).sort((a, b) => a - b)
  for (const g of gapsOf(arrivals)) assert.ok(g >= MIN, `arrival gap ${g.toFixed(1)} ms must be >= ${MIN} ms`)

  // In the pipelines: the start times they logged (epoch ms, one clock for all processes).
  const starts = results
    .flatMap((r) => [...r.stderr.matchAll(/pacing: start at (\d+) ms/g)].map((m) => Number(m[1])))
    .sort((a, b) => a - b)
  assert.equal(starts.length, 30)
  for (const g of gapsOf(starts)) assert.ok(g >= MIN + JITTER, `start gap ${g} ms must be >= ${MIN + JITTER} ms`)

  // The processes really competed: their requests interleave instead of running one process after another.
  const order = recs.map((r) => r.headers['x-pacing-child']).join('')
  const switches = [...order].filter((c, i) => i > 0 && c !== order[i - 1]).length
  assert.ok(switches >= 6, `requests of the three processes interleave (order ${order})`)

  const statePath = path.join(qwenHome, 'opencode_qwen_pacing.json')
  if (process.platform !== 'win32') {
    assert.equal(fs.statSync(qwenHome).mode & 0o777, 0o700)
    assert.equal(fs.statSync(statePath).mode & 0o777, 0o600)
  }
})

test('a corrupt pacing state file is replaced and requests still go through', async () => {
  const { mock, qwenHome, url } = await setup()
  fs.mkdirSync(qwenHome, { mode: 0o700 })
  const statePath = path.join(qwenHome, 'opencode_qwen_pacing.json')
  fs.writeFileSync(statePath, '{"next_start_ms": "garbage', { mode: 0o600 })
  const MIN = 50
  // In a child, whose debug log carries the pipeline's start times.
  const child = startChild({ url, apiKey: API_KEY, count: 2, id: 0, options: { qwenHome, minIntervalMs: MIN, jitterMinMs: 0, jitterMaxMs: 0 } })
  await child.ready
  child.go()
  const r = await child.done
  assert.equal(r.code, 0, `child failed: ${r.stderr}`)
  assert.deepEqual(JSON.parse(r.stdout.trim().split('\n').at(-1)).statuses, [200, 200])
  const state = JSON.parse(fs.readFileSync(statePath, 'utf8'))
  assert.equal(state.v, 1)
  assert.ok(Number.isInteger(state.next_start_ms) && state.next_start_ms > 0)
  assert.equal(mock.requestsTo(CHAT).length, 2)
  // Pacing guarantees the gap between request starts; arrivals at the mock may come closer (network jitter).
  const starts = [...r.stderr.matchAll(/pacing: start at (\d+) ms/g)].map((m) => Number(m[1]))
  assert.equal(starts.length, 2)
  assert.ok(starts[1] - starts[0] >= MIN, `start gap ${starts[1] - starts[0]} ms must be >= ${MIN} ms: the second request was paced`)
})

test('pacing 0/0 disables it: no slot is ever reserved, the state file only counts the requests', async () => {
  const { mock, qwenHome, url } = await setup()
  fs.mkdirSync(qwenHome, { mode: 0o700 })
  const client = api.createClient({ qwenHome, minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0 }, { apiKey: API_KEY })
  const responses = await Promise.all(
    [0, 1, 2, 3, 4].map(() => client.fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })),
  )
  for (const r of responses) {
    assert.equal(r.status, 200)
    await r.arrayBuffer()
  }
  assert.equal(mock.requestsTo(CHAT).length, 5)
  // The quota view (src/quota.rs) counts in the same file, in the background with pacing off (flushQuota
  // writes what is still in memory); pacing's own fields stay untouched.
  api.flushQuota()
  const state = JSON.parse(fs.readFileSync(path.join(qwenHome, 'opencode_qwen_pacing.json'), 'utf8'))
  assert.equal(state.next_start_ms, 0, 'no slot was reserved')
  assert.equal(state.last_start_ms, 0, 'no start was confirmed')
  assert.equal(state.quota.today, 5)
})
