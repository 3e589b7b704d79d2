// Where the time goes per request: the fetch path cut into stages, each timed against the runtime's own fetch
// on the mock in another process (sequential small JSON answers). The stages take turns request by request,
// so drift on a shared machine hits them alike; each line is the median per request and the extra over the
// runtime's fetch.
//   node bench/profile.mjs [pkgDir]     node_modules/.bin/bun bench/profile.mjs [pkgDir]
// pkgDir defaults to target/bench-pkg (release build made by bench/run.mjs). N=requests per stage (2000).
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { chatRequest, startMockProcess } from './mock-process.mjs'
import { wireBytes } from './wire.mjs'
import { median, prng, shuffled } from './turns.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const pkg = path.resolve(process.argv[2] ?? path.join(HERE, '..', 'target', 'bench-pkg'))
if (pkg.endsWith('bench-pkg')) fs.copyFileSync(path.join(HERE, '..', 'api.cjs'), path.join(pkg, 'api.cjs'))
const require = createRequire(import.meta.url)
const api = require(path.join(pkg, 'api.cjs'))
const binding = require(path.join(pkg, 'binding.cjs'))

// The server runs under Node in its own process, as in bench/run.mjs: its work does not share our thread.
const { base, qwenHome, opts, stop } = await startMockProcess()
const url = `${base}/v1/chat/completions`
const { body, init } = chatRequest(qwenHome, { stream: false })

// The JS side alone: a copy of api.cjs whose `exchange` hands its first answer back every time (same id, headers
// and body), so a request does no native work; against the full runtime transport, that leaves the crossing.
const reusedPath = path.join(pkg, 'api-exchange-reused.cjs')
const apiText = fs.readFileSync(path.join(pkg, 'api.cjs'), 'utf8')
const hook = 'const { exchange } = binding'
if (!apiText.includes(hook)) throw new Error(`bench/profile.mjs: api.cjs no longer has "${hook}"; update the JS-only stage`)
fs.writeFileSync(reusedPath, apiText.replace(hook, 'const first = binding.exchange\nlet answer\nconst exchange = (...args) => (answer ??= first(...args))'))
const reused = require(reusedPath).createClient(opts, { transport: 'runtime' })

const viaRuntime = api.createClient(opts, { transport: 'runtime' })
const viaNative = api.createClient(opts, { transport: 'native' })
const native = new binding.QwenClient(opts)
const flat = ['content-type', 'application/json']

// What our runtime transport hands the runtime's fetch: the CLI's headers and the aligned body, same bytes.
const wire = wireBytes(binding, native, url, 'POST', body)

const stages = {
  'runtime fetch + json() (baseline)': async () => (await fetch(url, init())).json(),
  'runtime fetch of our wire bytes + json()': async () =>
    (await fetch(url, { method: 'POST', headers: wire.headers, body: wire.body, redirect: 'manual', signal: new AbortController().signal })).json(),
  'exchange + finish alone (sync, no I/O)': async () => native.finish(Number(binding.exchange(native.handle, url, 'POST', flat, body).split('\0', 1)[0])),
  'api fetch + json(), runtime transport': async () => (await viaRuntime.fetch(url, init())).json(),
  'the same, exchange answer reused (JS only)': async () => (await reused.fetch(url, init())).json(),
  'api fetch + json(), native transport': async () => (await viaNative.fetch(url, init())).json(),
}

const N = Number(process.env.N ?? 2000)
const names = Object.keys(stages)
const times = Object.fromEntries(names.map((k) => [k, []]))
for (const f of Object.values(stages)) for (let i = 0; i < 100; i++) await f()
const random = prng(0x51ed)
for (let i = 0; i < N; i++) {
  for (const name of shuffled(names, random)) {
    const t0 = performance.now()
    await stages[name]()
    times[name].push((performance.now() - t0) * 1000)
  }
}
const baseline = median(times[names[0]])
console.log(`${typeof Bun !== 'undefined' ? `bun ${Bun.version}` : `node ${process.version}`}: µs per request, median of ${N}, stages taking turns`)
for (const name of names) {
  const m = median(times[name])
  const d = m - baseline
  const extra = name === names[0] || name.includes('alone') ? '' : `  (${d < 0 ? '−' : '+'}${Math.abs(d).toFixed(1)} µs)`
  console.log(`  ${name.padEnd(44)} ${m.toFixed(1).padStart(7)} µs${extra}`)
}
await stop()
process.exit(0)
