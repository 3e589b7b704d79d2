// Instructions and distinct code lines of one runtime-transport decision (`exchange` + `finish`), counted by valgrind's
// callgrind: exact and the same on every run, where a timing A/B on this shared box resolves ~1 µs at best.
// Code lines touched matter after an idle gap (each is a cache miss then); instructions, back to back.
//   node bench/instructions.mjs <pkgDir> [<pkgDir B>]      (needs valgrind; Node, since valgrind cannot run Bun)
// A pkgDir holds a build's .node with binding.cjs (as target/bench-pkg does). Steady state: the counts of a run
// of 40 calls minus those of a run of 20, per call, so that the first calls (file reads, thread start) drop out.
// Counted from Node's napi callback on, so a stripped build counts too; the addon's function names need a build
// with symbols (CARGO_PROFILE_RELEASE_STRIP=none).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const SELF = fileURLToPath(import.meta.url)

if (process.argv[2] === '--calls') await calls(process.argv[3], Number(process.argv[4]), process.argv[5] === '1')
else main()

/** The workload, under valgrind: `n` decisions of a small chat body, as bench/cold-exchange.mjs makes them. */
async function calls(pkg, n, stream) {
  const { createRequire } = await import('node:module')
  const binding = createRequire(SELF)(path.join(pkg, 'binding.cjs'))
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-instr-'))
  // A made-up token (never sent anywhere): the decision only reads it from the file.
  const creds = { access_token: 'a'.repeat(40), refresh_token: 'r'.repeat(40), token_type: 'Bearer', resource_url: 'portal.qwen.ai', expiry_date: Date.now() + 3600e3 }
  fs.writeFileSync(path.join(home, 'oauth_creds.json'), JSON.stringify(creds), { mode: 0o600 })
  const native = new binding.QwenClient({ qwenHome: home, minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0 })
  const messages = [{ role: 'system', content: 'You are a coding agent.' }, { role: 'user', content: 'hi' }]
  const body = JSON.stringify({ model: 'coder-model', stream, messages: stream ? messages : messages.slice(1) })
  const url = 'https://portal.qwen.ai/v1/chat/completions'
  const handle = native.handle
  for (let i = 0; i < n; i++) {
    native.finish(Number(binding.exchange(handle, url, 'POST', ['content-type', 'application/json'], body).split('\0', 1)[0]))
  }
  binding.flushQuota()
  fs.rmSync(home, { recursive: true, force: true })
}

/** Per function: instructions executed and the set of instruction addresses, from one callgrind output. */
function parse(file) {
  const fns = new Map()
  let fn = null
  let obj = null
  let inCall = false
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (line.startsWith('ob=')) obj = line.slice(3)
    else if (line.startsWith('fn=')) {
      fn = line.slice(3)
      if (!fns.has(fn)) fns.set(fn, { obj, ir: 0, addrs: new Map() })
    } else if (line.startsWith('calls=')) inCall = true
    else if (line.startsWith('0x')) {
      // `address line count`; the line after `calls=` is the call's inclusive cost, not this function's.
      if (inCall) {
        inCall = false
        continue
      }
      const [addr, , count] = line.split(' ')
      const f = fns.get(fn)
      f.ir += Number(count)
      f.addrs.set(addr, (f.addrs.get(addr) ?? 0) + Number(count))
    }
  }
  return fns
}

function profile(pkg, stream) {
  const runs = [20, 40].map((n) => {
    const out = path.join(os.tmpdir(), `qwen-instr-${process.pid}-${n}.out`)
    const r = spawnSync('valgrind', ['--tool=callgrind', '--toggle-collect=v8impl::(anonymous namespace)::FunctionCallbackWrapper::Invoke*', '--dump-instr=yes', '--compress-pos=no', '--compress-strings=no', `--callgrind-out-file=${out}`, process.execPath, SELF, '--calls', pkg, String(n), stream ? '1' : '0'], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`valgrind failed (${r.error?.message ?? r.stderr.split('\n').slice(-5).join(' ')})`)
    const fns = parse(out)
    fs.rmSync(out, { force: true })
    return fns
  })
  const [a, b] = runs
  let ir = 0
  const lines = new Set()
  const rows = []
  for (const [name, f] of b) {
    const before = a.get(name)
    const d = (f.ir - (before?.ir ?? 0)) / 20
    if (d < 1) continue
    ir += d
    // Addresses run more often in the longer run: the ones every call runs.
    const own = new Set()
    for (const [addr, count] of f.addrs) if (count > (before?.addrs.get(addr) ?? 0)) own.add(BigInt(addr) >> 6n)
    for (const l of own) lines.add(`${f.obj}:${l}`)
    rows.push({ name, obj: f.obj, ir: d, lines: own.size })
  }
  return { ir, lines: lines.size, rows: rows.sort((x, y) => y.ir - x.ir) }
}

function main() {
  const dirs = process.argv.slice(2)
  if (dirs.length === 0) {
    console.error('usage: node bench/instructions.mjs <pkgDir> [<pkgDir B>]   (SSE=1: a streamed chat body; TOP=functions listed)')
    process.exit(2)
  }
  const stream = process.env.SSE === '1'
  const top = Number(process.env.TOP ?? 12)
  for (const dir of dirs) {
    const { ir, lines, rows } = profile(path.resolve(dir), stream)
    console.log(`${dir}: ${Math.round(ir)} instructions, ${lines} code lines (64 B) per exchange + finish${stream ? ' (streamed body)' : ''}`)
    const ours = rows.filter((r) => !/\/(node|libc[^/]*|ld-linux[^/]*)$/.test(r.obj ?? ''))
    const mine = ours.reduce((n, r) => n + r.ir, 0)
    console.log(`  in the addon: ${Math.round(mine)} instructions; the rest is the runtime's napi and libc`)
    for (const r of rows.slice(0, top)) console.log(`  ${String(Math.round(r.ir)).padStart(6)} ir ${String(r.lines).padStart(4)} lines  ${r.name.slice(0, 100)}`)
  }
}
