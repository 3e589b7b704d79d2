// Whole requests of two builds against the runtime's own fetch, in one process, taking turns in a fresh random
// order each round: the box's drift hits all three alike. Per build, the median extra over the runtime's fetch.
//   node_modules/.bin/bun bench/ab-requests.mjs <pkgDir A> <pkgDir B>      (N=rounds, 3000)
// MODE=json (default): small JSON answers back to back, as the sequential row.
// MODE=sse: time to the first chunk of a streamed answer, the rest then read to its end. The mock's chunks come
// 5 ms apart, so every request follows a pause of a few tens of ms, as between OpenCode's requests: the path is
// timed cold (bench/RESULTS.md).
// A pkgDir holds a build's .node with binding.cjs and api.cjs (as target/bench-pkg does).
import path from 'node:path'
import { createRequire } from 'node:module'
import { performance } from 'node:perf_hooks'
import { chatRequest, startMockProcess } from './mock-process.mjs'
import { median, prng, shuffled } from './turns.mjs'

const require = createRequire(import.meta.url)
const dirs = process.argv.slice(2, 4)
if (dirs.length !== 2) {
  console.error('usage: bench/ab-requests.mjs <pkgDir A> <pkgDir B>   (MODE=json|sse, N=rounds)')
  process.exit(2)
}
const sse = (process.env.MODE ?? 'json') === 'sse'
const { base, qwenHome, opts, stop } = await startMockProcess()
const url = `${base}/v1/chat/completions`
const { init } = chatRequest(qwenHome, { stream: sse })
const [a, b] = dirs.map((dir) => require(path.resolve(dir, 'api.cjs')).createClient(opts, { transport: 'runtime' }))

/** µs to the answer (json) or to the first chunk (sse), the rest read before the next request. */
async function one(f) {
  const t0 = performance.now()
  const res = await f(url, init())
  if (!sse) {
    await res.json()
    return (performance.now() - t0) * 1000
  }
  const reader = res.body.getReader()
  if ((await reader.read()).done) throw new Error('empty stream')
  const t = (performance.now() - t0) * 1000
  while (!(await reader.read()).done);
  return t
}

const impls = { fetch: globalThis.fetch, A: a.fetch, B: b.fetch }
const names = Object.keys(impls)
const times = Object.fromEntries(names.map((n) => [n, []]))
for (const name of names) for (let i = 0; i < 100; i++) await one(impls[name])
const N = Number(process.env.N ?? (sse ? 1000 : 3000))
const random = prng(0x51ed)
for (let r = 0; r < N; r++) for (const name of shuffled(names, random)) times[name].push(await one(impls[name]))
const m = median(times.fetch)
const extra = (name) => `${name} +${(median(times[name]) - m).toFixed(1)} µs`
console.log(`${sse ? 'first SSE chunk' : 'small JSON'}, median of ${N}: runtime fetch ${m.toFixed(1)} µs; ${extra('A')}; ${extra('B')}`)
await stop()
process.exit(0)
