// Where the time goes per request: the full fetch path cut into stages, each timed against the runtime's
// own fetch on the same in-process mock (sequential small JSON answers, median of rounds).
//   node bench/profile.mjs [pkgDir]     node_modules/.bin/bun bench/profile.mjs [pkgDir]
// pkgDir defaults to target/bench-pkg (release build made by bench/run.mjs).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { startMockQwen } from '../__test__/support/mock-qwen.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const pkg = path.resolve(process.argv[2] ?? path.join(HERE, '..', 'target', 'bench-pkg'))
if (pkg.endsWith('bench-pkg')) fs.copyFileSync(path.join(HERE, '..', 'api.cjs'), path.join(pkg, 'api.cjs'))
const require = createRequire(import.meta.url)
const api = require(path.join(pkg, 'api.cjs'))
const binding = require(path.join(pkg, 'binding.cjs'))

const API_KEY = 'sk-bench-profile-0123456789'
const mock = await startMockQwen({ config: { apiKeys: [API_KEY] } })
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-prof-'))
const qwenHome = path.join(tmp, 'home')
fs.mkdirSync(qwenHome, { mode: 0o700 })
const t = mock.issueTokens()
fs.writeFileSync(path.join(qwenHome, 'oauth_creds.json'), JSON.stringify(t), { mode: 0o600 })
const opts = { qwenHome, oauthBaseUrl: mock.url, minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0 }
const url = `${mock.url}/v1/chat/completions`
const body = JSON.stringify({ model: 'coder-model', messages: [{ role: 'user', content: 'hi' }] })
const init = { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${t.access_token}` }, body }

const oauth = api.createClient(opts)
const keyed = api.createClient(opts, { apiKey: API_KEY })
const native = new binding.QwenClient(opts, API_KEY)
const flat = ['content-type', 'application/json']
// The raw native channel: start() is sync, every event comes through this one callback (no promise per call).
const waiting = new Map()
native.setEventCallback((id, kind, a, b, c, d, e, f) => {
  const h = waiting.get(id)
  waiting.delete(id)
  h?.(kind, a, b, c, d, e, f)
})
const nextEvent = (id) => new Promise((resolve) => waiting.set(id, (...ev) => resolve(ev)))
const startRaw = (u) => {
  const id = native.start(u, 'POST', flat, body)
  return nextEvent(id).then((ev) => ({ id, ev }))
}

const stages = {
  // One JS -> tokio -> JS round trip with no I/O: an untrusted host fails in Rust before anything is sent.
  'native round trip, no I/O (start -> failure event)': () => startRaw('https://untrusted.example.com/v1/chat/completions'),
  // The same through a napi `async fn` (a promise + a threadsafe function per call): cached credentials.
  'napi async fn, no I/O (getValidCredentials)': () => binding.getValidCredentials(opts),
  'fetch + text()': async () => (await fetch(url, init)).text(),
  'native start -> head event (api key)': () => startRaw(url),
  'native start -> head + body to the end': async () => {
    const { id, ev } = await startRaw(url)
    let done = ev[6]
    while (!done) {
      const next = nextEvent(id)
      native.pull(id)
      done = (await next)[2]
    }
  },
  'api fetch + text() (api key)': async () => (await keyed.fetch(url, init)).text(),
  'api fetch + text() (OAuth)': async () => (await oauth.fetch(url, init)).text(),
  'fetch + text(), with a signal': async () => (await fetch(url, { ...init, signal: new AbortController().signal })).text(),
  'api fetch + text() (OAuth, with a signal)': async () =>
    (await oauth.fetch(url, { ...init, signal: new AbortController().signal })).text(),
}

const N = Number(process.env.N ?? 300)
const ROUNDS = Number(process.env.ROUNDS ?? 5)
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1]
const res = Object.fromEntries(Object.keys(stages).map((k) => [k, []]))
for (const f of Object.values(stages)) for (let i = 0; i < 50; i++) await f()
for (let r = 0; r < ROUNDS; r++) {
  const names = Object.keys(stages)
  for (const name of r % 2 ? names.reverse() : names) {
    const t0 = performance.now()
    for (let i = 0; i < N; i++) await stages[name]()
    res[name].push(((performance.now() - t0) * 1000) / N)
  }
}
const base = median(res['fetch + text()'])
console.log(`${typeof Bun !== 'undefined' ? `bun ${Bun.version}` : `node ${process.version}`}: µs/request, median of ${ROUNDS} x ${N}`)
for (const [k, v] of Object.entries(res)) console.log(`  ${k.padEnd(45)} ${median(v).toFixed(1).padStart(7)} µs  ${(median(v) / base).toFixed(2)}x`)
await mock.close()
fs.rmSync(tmp, { recursive: true, force: true })
process.exit(0)
