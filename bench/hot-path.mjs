// Regenerates what the release build learns from requests under Bun (the runtime transport, OpenCode's default)
// and forced token refreshes:
// - src/hot_path.profdata: the profile of an instrumented build running the requests (profile-guided
//   optimisation), which the shipped linux-x64-gnu build takes (bench/release-build.mjs);
// - src/hot_path.ld: the functions a sampled run of them touched, which build.rs has the linker put side by side
//   in one `.text.hot` section. Between OpenCode's requests the CPU forgets our code; scattered over 2.6 MB of
//   text it then costs a page walk per function, packed it costs a few (bench/RESULTS.md: ~30 µs per request
//   after an idle gap, ~5 µs back to back).
//
//   node bench/hot-path.mjs        (Linux x64, needs `perf`, `nm`, llvm-profdata (rustup component llvm-tools)
//                                   and node_modules/.bin/bun; ~6 min)
//
// How: an instrumented release build (`-Cprofile-generate`) runs the requests and `llvm-profdata merge` keeps the
// counts. Then a release build with that profile that keeps its symbols runs them under
// `perf record`: every symbol of the addon that got a sample, the request path hottest first, then what a
// refresh adds. The names' hashes change with any build setting, so the script matches `name17h*` (every build
// of that function, and every instance of a generic whose name carries no types).
import fs from 'node:fs'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { startMockProcess } from './mock-process.mjs'
import { PROFILED_TARGET, releaseEnv } from './release-build.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.join(HERE, '..')

const ADDON = 'opencode-qwen-oauth.linux-x64-gnu.node'

/** The profile's workload: requests through the runtime transport (OpenCode's, under Bun). Run under Node: the
 * native side runs the same code under either, and Bun exits without running the profile runtime's exit hook, so
 * no counts would be written. Only these: every function the workload does not reach gets a count of zero and is
 * optimised for size. With the native transport's requests or with refreshes in the profile too, the addon grew
 * over the 4 MiB target (4.29 and 4.19 MB; this one: 3.88 MB, against 4.14 MB without a profile). */
const WORKLOADS = [['node', 'requests', 'runtime']]

if (process.argv[2] === '--load') await load(process.argv[3], process.argv[4], process.argv[5])
else generate()

/** A workload, run from `generate`: requests (JSON and SSE) through the given transport, or refreshes. */
async function load(pkg, what, transport = 'runtime') {
  const require = createRequire(import.meta.url)
  const api = require(path.join(pkg, 'api.cjs'))
  const { base, opts, stop } = await startMockProcess()
  const client = api.createClient(opts, { transport })
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

/** A release build for PROFILED_TARGET into `dir`, set up as a package in `dir/pkg`; its path. */
function buildPackage(dir, env) {
  run('cargo', ['build', '--release', '--lib', '--target', PROFILED_TARGET, '--target-dir', dir], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env,
  })
  const pkg = path.join(dir, 'pkg')
  fs.mkdirSync(pkg, { recursive: true })
  for (const f of ['api.cjs', 'binding.cjs']) fs.copyFileSync(path.join(ROOT, f), path.join(pkg, f))
  fs.copyFileSync(path.join(dir, PROFILED_TARGET, 'release', 'libopencode_qwen_oauth.so'), path.join(pkg, ADDON))
  return pkg
}

/** llvm-profdata of the toolchain's own LLVM (rustup component llvm-tools), else the one on PATH. */
function llvmProfdata() {
  const sysroot = run('rustc', ['--print', 'sysroot']).trim()
  const own = path.join(sysroot, 'lib', 'rustlib', PROFILED_TARGET, 'bin', 'llvm-profdata')
  return fs.existsSync(own) ? own : 'llvm-profdata'
}

/** src/hot_path.profdata from an instrumented build running the workloads. */
function profile(bun) {
  const dir = path.join(ROOT, 'target', 'pgo-generate')
  const raw = path.join(dir, 'profraw')
  fs.rmSync(raw, { recursive: true, force: true })
  process.stderr.write('instrumented release build into target/pgo-generate ...\n')
  // Only this target's crates are instrumented (`--target`): build scripts and proc-macros write no counts.
  const pkg = buildPackage(dir, { ...process.env, RUSTFLAGS: `-Cprofile-generate=${raw}` })
  for (const [runtime, what, transport] of WORKLOADS) {
    process.stderr.write(`${what} (${transport} transport) under ${runtime}, instrumented ...\n`)
    run(runtime === 'bun' ? bun : process.execPath, [fileURLToPath(import.meta.url), '--load', pkg, what, transport], {
      stdio: ['ignore', 'inherit', 'inherit'],
    })
  }
  const counts = fs.readdirSync(raw).filter((f) => f.endsWith('.profraw'))
  if (counts.length === 0) throw new Error(`no profile counts in ${raw}: did the workloads run?`)
  const out = path.join(ROOT, 'src', 'hot_path.profdata')
  // Not `--sparse`: the zero counts are what marks the rest cold (a sparse profile left it at full optimisation,
  // and the addon at 4.6 MB).
  run(llvmProfdata(), ['merge', '-o', out, ...counts.map((f) => path.join(raw, f))])
  process.stderr.write(`src/hot_path.profdata: ${fs.statSync(out).size} bytes\n`)
}

function generate() {
  if (process.platform !== 'linux' || process.arch !== 'x64') throw new Error('the hot path is made for linux-x64-gnu')
  const bun = path.join(ROOT, 'node_modules', '.bin', 'bun')
  profile(bun)
  const dir = path.join(ROOT, 'target', 'hot-path')
  process.stderr.write('release build with the profile and with symbols into target/hot-path ...\n')
  const pkg = buildPackage(dir, { ...releaseEnv(ROOT), CARGO_PROFILE_RELEASE_STRIP: 'none' })
  const addon = ADDON
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
    '   linker on Linux. A function renamed since just falls back to its usual place. Each name in the three',
    '   sections a build may put it in: .text.hot. and .text.unlikely. when built with src/hot_path.profdata. */',
    'SECTIONS',
    '{',
    '  .text.hot : {',
    // With the profile, LLVM names a function's section by how hot the profile found it.
    ...patterns.map((p) => `    *(.text.${p} .text.hot.${p} .text.unlikely.${p})`),
    '  }',
    '}',
    'INSERT BEFORE .text;',
    '',
  ].join('\n')
  fs.writeFileSync(path.join(ROOT, 'src', 'hot_path.ld'), script)
  process.stderr.write(`src/hot_path.ld: ${patterns.length} functions (${hot.reduce((n, h) => n + h.samples, 0)} samples)\n`)
}
