// CPU time per request on each thread of this process, 32 requests in flight: the runtime's fetch, the same bytes
// through it, and ours, in blocks of 320 requests taking turns. The 32-concurrent row times the whole box (the mock,
// the runtime's HTTP thread, our threads); this says which thread pays for what we add.
//   node_modules/.bin/bun bench/thread-cpu.mjs <pkgDir>      (R=rounds, 60; Linux: reads /proc/self/task)
// A pkgDir holds a build's .node with binding.cjs and api.cjs (as target/bench-pkg does). Mock in its own process.
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { chatRequest, startMockProcess } from './mock-process.mjs'
import { wireBytes } from './wire.mjs'
import { inFlight, median, prng, shuffled } from './turns.mjs'

const require = createRequire(import.meta.url)
const pkg = process.argv[2]
if (!pkg) {
  console.error('usage: bench/thread-cpu.mjs <pkgDir>   (R=rounds)')
  process.exit(2)
}
const { base, qwenHome, opts, stop } = await startMockProcess()
const url = `${base}/v1/chat/completions`
const { init, body } = chatRequest(qwenHome)
const api = require(path.resolve(pkg, 'api.cjs'))
const binding = require(path.resolve(pkg, 'binding.cjs'))
const wire = wireBytes(binding, new binding.QwenClient(opts), url, 'POST', body)
const impls = {
  runtime: (u, i) => fetch(u, i),
  'same bytes': (u, i) => fetch(u, { method: 'POST', headers: wire.headers, body: wire.body, signal: i.signal }),
  // Each runtime's default transport, as in the bench rows (runtime under Bun, native under Node).
  ours: api.createClient(opts).fetch,
}

/** µs on a CPU so far, per thread: the JS thread as `JS`, the others by name (threads of one name summed). */
function threadCpu() {
  const out = {}
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      const name = tid === String(process.pid) ? 'JS' : fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim()
      const ns = Number(fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0])
      out[name] = (out[name] ?? 0) + ns / 1e3
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out
}

const N = 320
/** One block of N requests through 32 workers: µs per request of wall time and of each thread's CPU. */
async function block(f) {
  const cpu0 = threadCpu()
  const t0 = performance.now()
  await inFlight(N, 32, async () => (await f(url, init())).json())
  const wall = ((performance.now() - t0) * 1000) / N
  const cpu1 = threadCpu()
  return { wall, ...Object.fromEntries(Object.entries(cpu1).map(([k, v]) => [k, (v - (cpu0[k] ?? 0)) / N])) }
}

const random = prng(7)
const seen = Object.fromEntries(Object.keys(impls).map((k) => [k, {}]))
for (let r = 0; r < 10; r++) for (const f of Object.values(impls)) await block(f)
for (let r = 0; r < Number(process.env.R ?? 60); r++) {
  for (const k of shuffled(Object.keys(impls), random)) {
    for (const [what, v] of Object.entries(await block(impls[k]))) (seen[k][what] ??= []).push(v)
  }
}
console.log(`µs per request, median of ${process.env.R ?? 60} blocks of ${N} (32 in flight):`)
for (const [k, m] of Object.entries(seen)) {
  const cols = Object.entries(m)
    .map(([what, v]) => [what, median(v)])
    .filter(([what, v]) => what === 'wall' || v >= 0.05)
  console.log(`  ${k.padEnd(11)} ${cols.map(([what, v]) => `${what} ${v.toFixed(1)}`).join(', ')}`)
}
await stop()
process.exit(0)
