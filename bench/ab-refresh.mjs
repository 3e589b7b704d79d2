// Forced token refreshes (lock + file + HTTP, `getValidCredentials({ force: true })`) of two builds against a bare
// HTTP refresh with the runtime's fetch, in one process, taking turns in a fresh random order every time: the box's
// drift hits all three alike, and no refresh follows another of the same build at once (as refreshes an hour apart
// do not; the refresh row of bench/run.mjs runs 20 in a row). Each on a token chain of its own.
//   node_modules/.bin/bun bench/ab-refresh.mjs <pkgDir A> <pkgDir B>      (N=turns, 300; also under node)
// A pkgDir holds a build's .node with binding.cjs and api.cjs (as target/bench-pkg does).
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { performance } from 'node:perf_hooks'
import { CLIENT_ID } from '../__test__/support/mock-qwen.mjs'
import { startMockProcess } from './mock-process.mjs'
import { median, prng, shuffled } from './turns.mjs'
import { postRefresh } from './wire.mjs'

const require = createRequire(import.meta.url)
const dirs = process.argv.slice(2, 4)
if (dirs.length !== 2) {
  console.error('usage: bench/ab-refresh.mjs <pkgDir A> <pkgDir B>   (N=turns)')
  process.exit(2)
}
const { base, homes, opts, stop } = await startMockProcess({ homes: 3 })

// The bare refresh's chain: its refresh token, read from its file and never printed.
let bareToken = JSON.parse(fs.readFileSync(path.join(homes[2], 'oauth_creds.json'), 'utf8')).refresh_token
async function bare() {
  bareToken = (await postRefresh(base, CLIENT_ID, bareToken, 'bare')).refresh_token ?? bareToken
}
const forced = (dir, qwenHome) => {
  const api = require(path.resolve(dir, 'api.cjs'))
  return async () => {
    const c = await api.getValidCredentials({ ...opts, qwenHome }, { force: true })
    if (!c.accessToken) throw new Error('no token')
  }
}

const impls = { bare, A: forced(dirs[0], homes[0]), B: forced(dirs[1], homes[1]) }
const names = Object.keys(impls)
const times = Object.fromEntries(names.map((n) => [n, []]))
for (const name of names) for (let i = 0; i < 20; i++) await impls[name]()
const N = Number(process.env.N ?? 300)
const random = prng(0x51ed)
for (let r = 0; r < N; r++) {
  for (const name of shuffled(names, random)) {
    const t0 = performance.now()
    await impls[name]()
    times[name].push((performance.now() - t0) * 1000)
  }
}
const b = median(times.bare)
const row = (name) => `${name} ${median(times[name]).toFixed(1)} µs (${(median(times[name]) / b).toFixed(2)}x)`
console.log(`forced refresh, median of ${N}: bare HTTP refresh ${b.toFixed(1)} µs; ${row('A')}; ${row('B')}`)
await stop()
process.exit(0)
