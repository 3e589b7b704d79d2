// The runtime transport's native decision (`exchange` + `finish`) of two builds, each call made cold: after a
// timer, as between real requests, when the CPU has forgotten our code. The builds take turns in one process,
// so the box's drift hits both alike; this resolves ~0.5 µs where a whole-request A/B resolves ~1–2 µs.
//   node_modules/.bin/bun bench/cold-exchange.mjs <pkgDir A> <pkgDir B>
// SSE=1: a streamed chat body; N=calls each; IDLE=ms of the timer (0). With IDLE=20 the call follows a pause as
// long as a streamed answer's, as in the first-SSE-chunk row and between OpenCode's requests: ~3 µs back to
// back, ~10 µs after a 0 ms timer, 60–80 µs after 20 ms (bench/RESULTS.md).
// A pkgDir holds a build's .node with binding.cjs (as target/bench-pkg does).
import path from 'node:path'
import { createRequire } from 'node:module'
import { performance } from 'node:perf_hooks'
import { startMockProcess } from './mock-process.mjs'
import { median } from './turns.mjs'

const require = createRequire(import.meta.url)
const dirs = process.argv.slice(2, 4)
if (dirs.length !== 2) {
  console.error('usage: bench/cold-exchange.mjs <pkgDir A> <pkgDir B>')
  process.exit(2)
}
const { base, opts, stop } = await startMockProcess()
const url = `${base}/v1/chat/completions`
const messages = [
  { role: 'system', content: 'You are a coding agent.' },
  { role: 'user', content: 'hi' },
]
const body = JSON.stringify({ model: 'coder-model', stream: process.env.SSE === '1', messages })
const flat = ['content-type', 'application/json']
const calls = dirs.map((dir) => {
  const binding = require(path.resolve(dir, 'binding.cjs'))
  const native = new binding.QwenClient(opts)
  const handle = native.handle
  return () => native.finish(Number(binding.exchange(handle, url, 'POST', flat, body).split('\0', 1)[0]))
})
const times = [[], []]
const N = Number(process.env.N ?? 6000)
const IDLE = Number(process.env.IDLE ?? 0)
for (let i = 0; i < N; i++) {
  for (const k of i % 2 ? [0, 1] : [1, 0]) {
    await new Promise((resolve) => setTimeout(resolve, IDLE))
    const t0 = performance.now()
    calls[k]()
    times[k].push((performance.now() - t0) * 1000)
  }
}
console.log(`cold exchange + finish (after a ${IDLE} ms timer), median of ${N}: A ${median(times[0]).toFixed(2)} µs, B ${median(times[1]).toFixed(2)} µs`)
await stop()
process.exit(0)
