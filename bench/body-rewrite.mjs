// Benchmark row: what the CLI-aligned body rewrite (src/pipeline/body/) costs per request on a 100 KB OpenCode-shaped
// chat body (10 KB system prompt, ten tools, a tool-calling history), against the whole per-request pipeline.
//
//   node bench/body-rewrite.mjs [--build] [--pkg DIR] [--requests N] [--rounds R] [--kb K] [--bodies source,dense]
//                               [--no-rust]
//
// For each body (`source`: the history reads this repository's Rust files; `dense`: an escape every 9 bytes, a
// worst case for string scanning):
// 1. pipeline: a client process sends the body N times per round through api.createClient (release addon,
//    pacing off) to the mock Qwen server in this process (SSE answer without chunk delays), alternating
//    alignRequestBody on and off; median over rounds of the mean time per request (send → response fully read).
// 2. rewrite alone: the same bytes through the rewrite in a release build of the unit test
//    `pipeline::body::tests::rewrite_cost` (cargo test --release … --ignored), median µs per rewrite.
// Prints rewrite / pipeline (target ≤ 5 %) and the aligned − unaligned difference of the pipeline time; writes
// bench/results/body-rewrite.json. Release builds go to target/bench-body (cargo) and target/bench-body-pkg
// (addon), built when missing or with --build.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawn, spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { median } from './turns.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(HERE, '..')
const CHAT = '/v1/chat/completions'
const NO_PACING = { minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0 }
const argv = process.argv.slice(2)
const flag = (name) => argv.includes(name)
const value = (name, dflt) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : dflt)
const TOOLS = ['bash', 'edit', 'glob', 'grep', 'read', 'skill', 'task', 'todowrite', 'webfetch', 'write'].map((name) => ({
  type: 'function',
  function: {
    name,
    description: `Use the ${name} tool. `.repeat(20),
    parameters: { type: 'object', properties: { path: { type: 'string', description: 'A path.' } }, required: ['path'] },
  },
}))

/**
 * An OpenCode-shaped streaming chat body of about `kb` KB, as JSON text, ending in a tool result (a tool turn).
 * `source`: the history is an agent reading this repository's Rust sources (the system prompt is the README);
 * `dense`: the same tiny snippet over and over, an escape every 9 bytes (a worst case for string scanning).
 */
export function openCodeBody(kb = 100, kind = 'source') {
  const files = fs
    .readdirSync(path.join(ROOT, 'src'), { recursive: true })
    .filter((f) => f.endsWith('.rs'))
    .sort()
    .map((f) => [f, fs.readFileSync(path.join(ROOT, 'src', f), 'utf8')])
  const system = kind === 'dense' ? 'You are opencode, an interactive CLI tool. '.repeat(240) : fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8').slice(0, 10_000)
  const messages = [{ role: 'system', content: system }]
  const body = { model: 'coder-model', max_tokens: 32000, messages, tools: TOOLS, tool_choice: 'auto', stream: true, stream_options: { include_usage: true } }
  for (let i = 0; JSON.stringify(body).length < kb * 1024; i++) {
    const [file, text] = files[i % files.length]
    const chunk = kind === 'dense' ? 'fn main() {\n    println!("hello");\n}\n'.repeat(20) : text.slice(0, 3000)
    messages.push({ role: 'user', content: `Please look at ${file} and fix the "bug" in it.` })
    messages.push({
      role: 'assistant',
      content: null,
      tool_calls: [{ id: `call_${i}`, type: 'function', function: { name: 'read', arguments: JSON.stringify({ path: `src/${file}` }) } }],
    })
    messages.push({ role: 'tool', tool_call_id: `call_${i}`, content: chunk })
  }
  return JSON.stringify(body)
}

// ─── child: the measuring client ──────────────────────────────────────────────────────────────────
async function child(cfg) {
  const api = createRequire(import.meta.url)(path.join(cfg.pkg, 'api.cjs'))
  const body = fs.readFileSync(cfg.bodyFile, 'utf8')
  const clients = {
    on: api.createClient({ qwenHome: cfg.qwenHome, ...NO_PACING, alignRequestBody: true }),
    off: api.createClient({ qwenHome: cfg.qwenHome, ...NO_PACING, alignRequestBody: false }),
  }
  const init = { method: 'POST', headers: { 'content-type': 'application/json', 'x-session-id': 'ses_bench' }, body }
  const once = async (client) => {
    const res = await client.fetch(cfg.url, init)
    await res.arrayBuffer()
    if (res.status !== 200) throw new Error(`status ${res.status}`)
  }
  for (const c of Object.values(clients)) for (let i = 0; i < 30; i++) await once(c) // warm-up
  const perRequest = { on: [], off: [] }
  for (let r = 0; r < cfg.rounds; r++) {
    for (const mode of r % 2 ? ['on', 'off'] : ['off', 'on']) {
      const t0 = performance.now()
      for (let i = 0; i < cfg.requests; i++) await once(clients[mode])
      perRequest[mode].push((performance.now() - t0) / cfg.requests)
    }
  }
  process.stdout.write(JSON.stringify(perRequest) + '\n')
}

// ─── parent ───────────────────────────────────────────────────────────────────────────────────────
function build(pkg) {
  const hasNode = fs.existsSync(pkg) && fs.readdirSync(pkg).some((f) => f.endsWith('.node'))
  if (flag('--build') || !hasNode) {
    process.stderr.write(`building the release addon into ${path.relative(ROOT, pkg)} ...\n`)
    const npx = process.platform === 'win32' ? 'npx.cmd' : 'npx'
    const r = spawnSync(npx, ['napi', 'build', '--platform', '--release', '--js', 'binding.cjs', '--dts', 'binding.d.ts', '-o', pkg], {
      cwd: ROOT,
      stdio: 'inherit',
      env: { ...process.env, CARGO_TARGET_DIR: path.join(ROOT, 'target', 'bench-body') },
    })
    if (r.status !== 0) throw new Error('release build failed')
  }
  fs.copyFileSync(path.join(ROOT, 'api.cjs'), path.join(pkg, 'api.cjs'))
}

function rustRewriteMicros(bodyFile) {
  process.stderr.write('rewrite alone: cargo test --release (target/bench-body) ...\n')
  const r = spawnSync(
    'cargo',
    ['test', '--release', '--lib', 'pipeline::body::tests::rewrite_cost', '--', '--ignored', '--nocapture', '--exact'],
    { cwd: ROOT, encoding: 'utf8', env: { ...process.env, CARGO_TARGET_DIR: path.join(ROOT, 'target', 'bench-body'), QWEN_BENCH_BODY: bodyFile } },
  )
  const m = /rewrite_us=([\d.]+)/.exec(r.stdout)
  const min = /rewrite_us_min=([\d.]+)/.exec(r.stdout)
  if (!m || !min) throw new Error(`rewrite_cost printed no result:\n${r.stdout}\n${r.stderr.slice(-3000)}`)
  return { median: Number(m[1]), min: Number(min[1]) }
}

/** Per-request pipeline times (ms per round, aligned and not) for one body, from a client process. */
function measurePipeline(cfg) {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [fileURLToPath(import.meta.url), '--child', JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    c.stdout.on('data', (d) => (out += d))
    c.on('error', reject)
    c.on('close', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').at(-1))) : reject(new Error(`client exited ${code}`))))
  })
}

async function main() {
  const pkg = path.resolve(value('--pkg', path.join(ROOT, 'target', 'bench-body-pkg')))
  const requests = Number(value('--requests', 200))
  const rounds = Number(value('--rounds', 7))
  const kb = Number(value('--kb', 100))
  const kinds = value('--bodies', 'source,dense').split(',')
  if (!value('--pkg')) build(pkg)

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-body-bench-'))
  const { startMockQwen } = await import('../__test__/support/mock-qwen.mjs')
  // Answers without the mock's default 5 ms between SSE chunks: the time measured is the pipeline's, not a wait.
  const mock = await startMockQwen({ config: { chunkDelayMs: 0 } })
  // The mock keeps every request (100 KB each, parsed): let them go while measuring.
  const trim = setInterval(() => (mock.requests.length = 0), 200)
  const rows = []
  try {
    const qwenHome = path.join(tmp, 'qwen-home')
    fs.mkdirSync(qwenHome, { mode: 0o700 })
    const t = mock.issueTokens({ expiresInSec: 3600 })
    const creds = { access_token: t.access_token, refresh_token: t.refresh_token, token_type: t.token_type, resource_url: t.resource_url, expiry_date: t.expiry_date }
    fs.writeFileSync(path.join(qwenHome, 'oauth_creds.json'), JSON.stringify(creds, null, 2), { mode: 0o600 })
    for (const kind of kinds) {
      const bodyFile = path.join(tmp, `body-${kind}.json`)
      fs.writeFileSync(bodyFile, openCodeBody(kb, kind))
      const bodyBytes = fs.statSync(bodyFile).size
      process.stderr.write(`pipeline (${kind} body, ${bodyBytes} B): ${rounds} rounds x ${requests} requests per mode ...\n`)
      const pipeline = await measurePipeline({ pkg, bodyFile, qwenHome, url: `${mock.url}${CHAT}`, requests, rounds })
      const rewrite = flag('--no-rust') ? null : rustRewriteMicros(bodyFile)
      const on = median(pipeline.on)
      const off = median(pipeline.off)
      rows.push({
        body: kind,
        bodyBytes,
        pipelineMsAligned: +on.toFixed(3),
        pipelineMsUnaligned: +off.toFixed(3),
        alignedMinusUnalignedMs: +(on - off).toFixed(3),
        rewriteUs: rewrite?.median ?? null,
        rewriteUsFastest: rewrite?.min ?? null,
        rewriteShareOfPipeline: rewrite ? +(rewrite.median / 1000 / on).toFixed(4) : null,
      })
    }
  } finally {
    clearInterval(trim)
    await mock.close()
    fs.rmSync(tmp, { recursive: true, force: true })
  }

  const result = {
    date: new Date().toISOString(),
    command: `node bench/body-rewrite.mjs ${argv.join(' ')}`.trim(),
    runtime: `node ${process.version}`,
    machine: `${os.cpus()[0]?.model ?? '?'} x${os.cpus().length}, ${os.platform()} ${os.arch()}, load ${os.loadavg()[0].toFixed(2)}`,
    requestsPerRound: requests,
    rounds,
    target: 'rewrite ≤ 5 % of the per-request pipeline time (100 KB body, pacing off)',
    rows,
  }
  fs.mkdirSync(path.join(HERE, 'results'), { recursive: true })
  fs.writeFileSync(path.join(HERE, 'results', 'body-rewrite.json'), JSON.stringify(result, null, 2) + '\n')
  const pct = (x) => (x == null ? 'n/a' : `${(x * 100).toFixed(1)} %`)
  console.log(`CLI-aligned body rewrite vs the per-request pipeline (pacing off, ${result.runtime}, medians)`)
  console.log('body     bytes    pipeline aligned  not aligned  difference  rewrite alone  rewrite / pipeline')
  for (const r of rows) {
    console.log(
      `${r.body.padEnd(8)} ${String(r.bodyBytes).padEnd(8)} ${`${r.pipelineMsAligned.toFixed(3)} ms`.padEnd(17)} ` +
        `${`${r.pipelineMsUnaligned.toFixed(3)} ms`.padEnd(12)} ${`${r.alignedMinusUnalignedMs.toFixed(3)} ms`.padEnd(11)} ` +
        `${(r.rewriteUs == null ? 'n/a' : `${r.rewriteUs.toFixed(1)} µs`).padEnd(14)} ${pct(r.rewriteShareOfPipeline)}`,
    )
  }
  console.log('target: rewrite / pipeline ≤ 5 %')
}

if (argv[0] === '--child') await child(JSON.parse(argv[1]))
else await main()
