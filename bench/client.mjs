// Measurement worker for bench/run.mjs: runs in the runtime under test (node or bun), talks to the mock the
// parent started, prints one JSON line with raw timings. Never prints tokens.
// argv[2]: JSON { scenario, apiPath, url, oauthBaseUrl, qwenHome, token, impls, rounds, n, concurrency, ... }
import { createRequire } from 'node:module'
import { performance } from 'node:perf_hooks'
import { pathToFileURL } from 'node:url'
import { postRefresh, wireBytes } from './wire.mjs'
import { inFlight, median, prng, shuffled } from './turns.mjs'

const cfg = JSON.parse(process.argv[2])
const require = createRequire(import.meta.url)
const NO_PACING = { minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0 }

// Resolves once the line is handed to the pipe, so the process.exit() that follows the result cannot cut it.
const out = (obj) => new Promise((resolve) => process.stdout.write(JSON.stringify(obj) + '\n', resolve))
/** The fetch functions under test, by name: the runtime's own, ours, and optionally another plugin's. */
async function loadImpls() {
  const impls = {}
  const want = cfg.impls ?? ['baseline', 'ours']
  if (want.includes('baseline')) impls.baseline = globalThis.fetch.bind(globalThis)
  if (want.includes('ours')) {
    const api = require(cfg.apiPath)
    const client = api.createClient({ qwenHome: cfg.qwenHome, oauthBaseUrl: cfg.oauthBaseUrl, ...NO_PACING, ...cfg.options })
    impls.ours = client.fetch
  }
  if (want.includes('wire')) impls.wire = wireFetch()
  // The baseline again, measured as a separate implementation: how far apart two identical fetches come out.
  if (want.includes('control')) impls.control = (url, init) => globalThis.fetch(url, init)
  for (const [i, file] of (cfg.fetchModules ?? []).entries()) {
    if (!want.includes(`module${i}`)) continue
    // A module that cannot run here (e.g. TypeScript-only under Node) is reported, not fatal to the other rows.
    try {
      impls[`module${i}`] = await moduleFetch(file)
    } catch (err) {
      skipped[`module${i}`] = String(err?.message ?? err).split('\n')[0]
    }
  }
  return impls
}

/** Impls that could not be loaded in this runtime, with why. */
const skipped = {}

/** Another plugin's fetch: a module exporting `fetch`, a default function, or `createFetch(ctx)`. */
async function moduleFetch(file) {
  const mod = await import(pathToFileURL(file).href)
  const ctx = { baseUrl: `${cfg.oauthBaseUrl}/v1`, qwenHome: cfg.qwenHome, accessToken: cfg.token }
  let f = mod.createFetch ? await mod.createFetch(ctx) : (mod.fetch ?? mod.default)
  if (typeof f === 'object' && f && typeof f.fetch === 'function') f = f.fetch.bind(f)
  if (typeof f !== 'function') throw new Error(`${file}: export a fetch-compatible function (fetch, default, or createFetch(ctx))`)
  return f
}

/**
 * The runtime's own fetch sending exactly the bytes our fetch puts on the wire (the Qwen Code CLI's headers,
 * the CLI-aligned body), taken once per body from the native side: what any plugin speaking the protocol sends.
 * The difference between it and ours is the plugin's own cost; between it and the baseline, the protocol's.
 */
function wireFetch() {
  const binding = require(cfg.apiPath.replace(/api\.cjs$/, 'binding.cjs'))
  const native = new binding.QwenClient({ qwenHome: cfg.qwenHome, oauthBaseUrl: cfg.oauthBaseUrl, ...NO_PACING, ...cfg.options })
  const wire = new Map()
  const bytesFor = (url, method, body) => {
    let w = wire.get(body)
    if (!w) {
      w = wireBytes(binding, native, url, method, body)
      wire.set(body, w)
    }
    return w
  }
  return (url, init) => {
    const w = bytesFor(url, init.method, init.body)
    return globalThis.fetch(url, { method: init.method, headers: w.headers, body: w.body, signal: init.signal, redirect: 'manual' })
  }
}

const chatInit = (stream) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json', authorization: `Bearer ${cfg.token}` },
  // As OpenCode's AI SDK calls do: every request carries a signal.
  signal: new AbortController().signal,
  body: JSON.stringify({ model: 'coder-model', stream, messages: [{ role: 'user', content: 'hi' }] }),
})

async function smallJson(f) {
  const res = await f(cfg.url, chatInit(false))
  if (res.status !== 200) throw new Error(`HTTP ${res.status}`)
  const j = await res.json()
  if (!j.choices) throw new Error('unexpected body')
}

/**
 * Runs one step of implementation `name`. Another plugin's failure (it may not cope with the scenario) takes
 * it out of the row with the reason; a failure of ours or of the runtime's fetch ends the run.
 */
async function step(name, fn) {
  if (skipped[name]) return undefined
  try {
    return await fn()
  } catch (err) {
    if (!name.startsWith('module')) throw err
    skipped[name] = `failed: ${String(err?.message ?? err).split('\n')[0]}`
    return undefined
  }
}

/** The results of the implementations still in the row. */
const survivors = (res) => Object.fromEntries(Object.entries(res).filter(([name]) => !skipped[name]))

/** `n` warm-up calls of each implementation. */
async function warmUp(impls, n, one) {
  for (const [name, f] of Object.entries(impls)) for (let i = 0; i < n; i++) await step(name, () => one(f))
}

/** Round by round, the implementations in a fresh random order each time (see `interleaved`). */
async function rounds(impls, perRound, count = cfg.rounds) {
  const names = Object.keys(impls)
  const random = prng(0x51ed)
  const res = Object.fromEntries(names.map((n) => [n, []]))
  for (let r = 0; r < count; r++) {
    for (const name of shuffled(names, random)) {
      const t = await step(name, () => perRound(impls[name], name))
      if (t !== undefined) res[name].push(t)
    }
  }
  return survivors(res)
}

/**
 * Request by request, the implementations taking turns in a fresh random order each time, so that drift on a
 * shared machine hits them alike and none always follows the same one (a plugin that writes a file per
 * request slowed whichever came next); per round the median and the mean of each one's times, in µs.
 */
async function interleaved(impls, one) {
  const names = Object.keys(impls)
  const res = Object.fromEntries(names.map((n) => [n, []]))
  const means = Object.fromEntries(names.map((n) => [n, []]))
  const random = prng(0x51ed)
  for (let r = 0; r < cfg.rounds; r++) {
    const times = Object.fromEntries(names.map((n) => [n, []]))
    for (let i = 0; i < cfg.n; i++) {
      for (const name of shuffled(names, random)) {
        const t = await step(name, () => one(impls[name]))
        if (t !== undefined) times[name].push(t)
      }
    }
    for (const name of names) {
      if (skipped[name]) continue
      res[name].push(median(times[name]) * 1000)
      means[name].push((times[name].reduce((a, b) => a + b, 0) / times[name].length) * 1000)
    }
  }
  return { ...survivors(res), means: survivors(means) }
}

async function sequential(impls) {
  await warmUp(impls, cfg.warmup, smallJson)
  return interleaved(impls, async (f) => {
    const t0 = performance.now()
    await smallJson(f)
    return performance.now() - t0
  })
}

async function concurrent(impls) {
  const batch = (f, total) => inFlight(total, cfg.concurrency, () => smallJson(f))
  await warmUp(impls, 1, (f) => batch(f, cfg.concurrency * 2))
  // A batch takes only tens of ms, so one GC pause moves it a lot: ten times the rounds of the other rows.
  return rounds(
    impls,
    async (f) => {
      const t0 = performance.now()
      await batch(f, cfg.n)
      return performance.now() - t0 // ms for the batch
    },
    cfg.rounds * 10,
  )
}

async function firstChunk(impls) {
  const one = async (f) => {
    const t0 = performance.now()
    const res = await f(cfg.url, chatInit(true))
    const reader = res.body.getReader()
    const first = await reader.read()
    const t = performance.now() - t0
    if (first.done) throw new Error('empty stream')
    while (!(await reader.read()).done);
    return t
  }
  await warmUp(impls, cfg.warmup, one)
  return interleaved(impls, one)
}

/** A full garbage collection: `--expose-gc` under Node, `Bun.gc(true)` under Bun. */
function collect() {
  if (globalThis.gc) globalThis.gc()
  else if (globalThis.Bun) globalThis.Bun.gc(true)
  else throw new Error('no way to collect garbage here (node needs --expose-gc)')
}

/**
 * The same 100 MB in plain JS, no network, no plugin: a ReadableStream handing out fresh 64 KiB chunks as fast
 * as they are read. How far RSS rises here is what this runtime's collector lets garbage pile up to, the
 * floor for any fetch that hands out fresh buffers.
 */
async function plainStream() {
  const total = 100 * 1024 * 1024
  const size = 64 * 1024
  const src = new Uint8Array(size).fill(120)
  let sent = 0
  const stream = new ReadableStream(
    {
      pull(c) {
        if (sent >= total) return c.close()
        const chunk = new Uint8Array(size)
        chunk.set(src)
        sent += size
        c.enqueue(chunk)
      },
    },
    { highWaterMark: 0 },
  )
  return { plain: [await drain(() => ({ body: stream }))] }
}

/** Read one body to its end: MB/s and peak RSS growth over the start. */
async function drain(open) {
  globalThis.gc?.()
  const rss0 = process.memoryUsage().rss
  let peak = rss0
  let bytes = 0
  let chunks = 0
  const t0 = performance.now()
  const res = await open()
  const reader = res.body.getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    bytes += value.byteLength
    if ((++chunks & 15) === 0) peak = Math.max(peak, process.memoryUsage().rss)
    if (cfg.gcEvery && chunks % cfg.gcEvery === 0) collect()
  }
  const ms = performance.now() - t0
  peak = Math.max(peak, process.memoryUsage().rss)
  return { mbps: bytes / 1e6 / (ms / 1000), rssGrowthMB: (peak - rss0) / 1048576, bytes, chunks }
}

/** One big streamed answer in a fresh process: throughput and how far RSS rose above where it started. */
async function bigBody(impls) {
  const [name] = Object.keys(impls)
  if (!name) return {}
  const f = impls[name]
  const run = await step(name, async () => {
    await smallJson(f) // module loaded, connection pool warm
    return drain(() => f(cfg.url, chatInit(true)))
  })
  return run === undefined ? {} : { [name]: [run] }
}

/** The same refresh as many times: ours (lock + file + HTTP) against a bare HTTP refresh with fetch. */
async function refresh() {
  const api = require(cfg.apiPath)
  const opts = { qwenHome: cfg.qwenHome, oauthBaseUrl: cfg.oauthBaseUrl, ...NO_PACING }
  let bareToken = cfg.bareRefreshToken
  const bare = async () => {
    const j = await postRefresh(cfg.oauthBaseUrl, cfg.clientId, bareToken, 'bare')
    bareToken = j.refresh_token ?? bareToken
  }
  const ours = async () => {
    const c = await api.getValidCredentials(opts, { force: true })
    if (!c.accessToken) throw new Error('no token')
  }
  const impls = { baseline: bare, ours }
  if (cfg.floorHome) impls.floor = floorRefresh(cfg.floorHome)
  for (const f of Object.values(impls)) for (let i = 0; i < cfg.warmup; i++) await f()
  return rounds(impls, async (f) => {
    const t0 = performance.now()
    for (let i = 0; i < cfg.n; i++) await f()
    return ((performance.now() - t0) * 1000) / cfg.n
  })
}

/**
 * The same refresh in plain JS with the runtime's own fs and fetch, doing the steps any implementation that
 * shares the CLI's file must do: create `oauth_creds.lock` (exclusive, 0600, a UUID in it), look at the file,
 * POST the refresh, write a 0600 temp file and rename it over `oauth_creds.json`, check the lock is still
 * ours and unlink it. No fsync, no retries, no error handling: a floor, not a product.
 */
function floorRefresh(home) {
  const fs = require('node:fs')
  const path = require('node:path')
  const { randomUUID } = require('node:crypto')
  const credsPath = path.join(home, 'oauth_creds.json')
  const lockPath = path.join(home, 'oauth_creds.lock')
  return async () => {
    const id = randomUUID()
    const fd = fs.openSync(lockPath, 'wx', 0o600)
    fs.writeSync(fd, id)
    fs.closeSync(fd)
    try {
      const current = JSON.parse(fs.readFileSync(credsPath, 'utf8'))
      const j = await postRefresh(cfg.oauthBaseUrl, cfg.clientId, current.refresh_token, 'floor')
      const next = {
        access_token: j.access_token,
        token_type: j.token_type,
        refresh_token: j.refresh_token ?? current.refresh_token,
        resource_url: j.resource_url ?? current.resource_url,
        expiry_date: Date.now() + j.expires_in * 1000,
      }
      const tmp = `${credsPath}.${id.slice(0, 12)}.tmp`
      const t = fs.openSync(tmp, 'wx', 0o600)
      fs.writeSync(t, JSON.stringify(next, null, 2))
      fs.closeSync(t)
      fs.renameSync(tmp, credsPath)
    } finally {
      if (fs.readFileSync(lockPath, 'utf8') === id) fs.unlinkSync(lockPath)
    }
  }
}

/** Multi-process scenarios: load, say "ready", wait for "go", run, print statuses. */
async function whenGo() {
  out({ ready: true })
  await new Promise((resolve) => {
    let buf = ''
    process.stdin.on('data', (d) => {
      buf += d
      if (buf.includes('go\n')) resolve()
    })
  })
  process.stdin.pause()
}

async function burst() {
  const api = require(cfg.apiPath)
  const client = api.createClient({ qwenHome: cfg.qwenHome, oauthBaseUrl: cfg.oauthBaseUrl, ...NO_PACING })
  await whenGo()
  const statuses = await Promise.all(
    Array.from({ length: cfg.n }, async () => {
      const res = await client.fetch(cfg.url, chatInit(false))
      await res.arrayBuffer()
      return res.status
    }),
  )
  return { statuses }
}

async function paced() {
  const api = require(cfg.apiPath)
  const client = api.createClient({ qwenHome: cfg.qwenHome, oauthBaseUrl: cfg.oauthBaseUrl, ...cfg.options, debug: true })
  await whenGo()
  const statuses = []
  for (let i = 0; i < cfg.n; i++) {
    const res = await client.fetch(cfg.url, chatInit(false))
    await res.arrayBuffer()
    statuses.push(res.status)
  }
  return { statuses }
}

const scenarios = { sequential, concurrent, firstChunk, bigBody, plainStream, refresh, burst, paced }
try {
  const fn = scenarios[cfg.scenario]
  const needsImpls = ['sequential', 'concurrent', 'firstChunk', 'bigBody'].includes(cfg.scenario)
  await out({ result: { ...(await fn(needsImpls ? await loadImpls() : undefined)), skipped } })
  process.exit(0)
} catch (err) {
  process.stderr.write(`bench client ${cfg.scenario}: ${err?.stack ?? err}\n`)
  process.exit(1)
}
