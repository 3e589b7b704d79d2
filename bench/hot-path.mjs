// Regenerates src/hot_path.ld: the addon's functions that one request under Bun runs (the runtime transport,
// OpenCode's default) and a forced token refresh, which build.rs has the linker put side by side in one
// `.text.hot` section. Between OpenCode's requests the CPU forgets our code; scattered over 2.6 MB of text it
// then costs a page walk per function, packed it costs a few (bench/RESULTS.md: ~30 µs per request after an idle
// gap, ~5 µs back to back).
//
//   node bench/hot-path.mjs        (Linux, needs `perf`, `nm` and node_modules/.bin/bun; ~3 min)
//
// How: a release build that keeps its symbols, a request loop under `perf record`, every symbol of the addon
// that got a sample: the request path hottest first, then what a refresh adds. The names' hashes change with any build setting, so the script matches
// `name17h*` (every build of that function, and every instance of a generic whose name carries no types).
import fs from 'node:fs'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { startMockProcess } from './mock-process.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.join(HERE, '..')

if (process.argv[2] === '--load') await load(process.argv[3], process.argv[4])
else generate()

/** A workload, run under Bun from `generate`: requests (JSON and SSE) through the runtime transport, or refreshes. */
async function load(pkg, what) {
  const require = createRequire(import.meta.url)
  const api = require(path.join(pkg, 'api.cjs'))
  const { base, opts, stop } = await startMockProcess()
  const client = api.createClient(opts, { transport: 'runtime' })
  const init = (stream) => ({
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    signal: new AbortController().signal,
    body: JSON.stringify({ model: 'coder-model', stream, messages: [{ role: 'user', content: 'hi' }] }),
  })
  if (what === 'requests') {
    for (let i = 0; i < 15000; i++) {
      const res = await client.fetch(`${base}/v1/chat/completions`, init(i % 4 === 0))
      await res.text()
    }
  } else {
    for (let i = 0; i < 1500; i++) await api.getValidCredentials(opts, { force: true })
  }
  await stop()
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', maxBuffer: 1 << 28, ...opts })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`})`)
  return r.stdout
}

function generate() {
  if (process.platform !== 'linux') throw new Error('the hot path section is a Linux (ELF) build feature')
  const bun = path.join(ROOT, 'node_modules', '.bin', 'bun')
  const dir = path.join(ROOT, 'target', 'hot-path')
  process.stderr.write('release build with symbols into target/hot-path ...\n')
  run('cargo', ['build', '--release', '--lib', '--target-dir', dir], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, CARGO_PROFILE_RELEASE_STRIP: 'none' },
  })
  const pkg = path.join(dir, 'pkg')
  fs.mkdirSync(pkg, { recursive: true })
  for (const f of ['api.cjs', 'binding.cjs']) fs.copyFileSync(path.join(ROOT, f), path.join(pkg, f))
  const addon = 'opencode-qwen-oauth.linux-x64-gnu.node'
  fs.copyFileSync(path.join(dir, 'release', 'libopencode_qwen_oauth.so'), path.join(pkg, addon))

  // The request path first, then what a refresh adds: each in its own run, so that neither dilutes the other.
  const hot = []
  for (const what of ['requests', 'refresh']) {
    process.stderr.write(`${what} under perf ...\n`)
    const data = path.join(dir, `perf-${what}.data`)
    run('perf', ['record', '-q', '-F', '20000', '-o', data, '--', bun, fileURLToPath(import.meta.url), '--load', pkg, what], {
      stdio: ['ignore', 'inherit', 'inherit'],
    })
    const report = run('perf', ['report', '-i', data, '--no-demangle', '--no-children', '--dso', addon, '--sort', 'sym', '-F', 'sample,sym', '-g', 'none'])
    const sampled = []
    for (const line of report.split('\n')) {
      const m = /^\s*(\d+)\s+\[\.\]\s+(\S+)/.exec(line)
      if (m && !m[2].startsWith('0x')) sampled.push({ samples: Number(m[1]), name: m[2] })
    }
    hot.push(...sampled.sort((a, b) => b.samples - a.samples))
  }
  // Legacy Rust names end in a build-dependent hash (17h<16 hex>E); v0 names of the precompiled std stay as they are.
  // A generic whose name carries no types matches every instance in the crate graph: such a name is left out
  // when it stands for more than a few functions, so that the section stays small.
  const instances = new Map()
  for (const line of run('nm', ['--defined-only', path.join(pkg, addon)]).split('\n')) {
    const name = line.split(' ')[2]
    if (!name) continue
    const key = name.replace(/17h[0-9a-f]{16}E$/, '17h*')
    instances.set(key, (instances.get(key) ?? 0) + 1)
  }
  const patterns = [...new Set(hot.map(({ name }) => name.replace(/17h[0-9a-f]{16}E$/, '17h*')))].filter(
    (p) => (instances.get(p) ?? 1) <= 4,
  )
  if (patterns.length < 50) throw new Error(`only ${patterns.length} symbols sampled: did the loop run?`)
  const script = [
    '/* Generated by `node bench/hot-path.mjs` (do not edit): the functions one request under Bun and a token',
    '   refresh run (the request path first, each hottest first), side by side; build.rs passes this to the',
    '   linker on Linux. A function renamed since just falls back to its usual place. */',
    'SECTIONS',
    '{',
    '  .text.hot : {',
    ...patterns.map((p) => `    *(.text.${p})`),
    '  }',
    '}',
    'INSERT BEFORE .text;',
    '',
  ].join('\n')
  fs.writeFileSync(path.join(ROOT, 'src', 'hot_path.ld'), script)
  process.stderr.write(`src/hot_path.ld: ${patterns.length} functions (${hot.reduce((n, h) => n + h.samples, 0)} samples)\n`)
}
