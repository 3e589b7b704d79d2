// Benchmark suite (`npm run bench`): every figure is a ratio against a baseline measured in the same run
// against the same local mock server (the runtime's own fetch, a bare HTTP refresh, a plain JS module),
// median of repeated rounds. Reports; does not gate.
//
//   node bench/run.mjs [options]            (or: node_modules/.bin/bun bench/run.mjs)
//     --runtimes node,bun    runtimes whose clients are measured (default: both that are found)
//     --rounds N             rounds per overhead row (default 7)
//     --fetch-module P[,P]   also measure other plugins' fetch (modules exporting `fetch`, a default function,
//                            or `createFetch({ baseUrl, qwenHome, accessToken })`) against the runtime's fetch;
//                            bench/plugins/ has adapters for the JS plugins on npm (bash bench/plugins/install.sh)
//     --pkg DIR              directory holding api.cjs + binding.cjs + the .node to measure (default: a
//                            release build in target/bench-pkg, built when missing, older than src/, or with --build)
//     --build                rebuild the release addon first (napi build --release -o target/bench-pkg)
//     --only a,b             only these rows: seq,conc,sse,big,require,size,refresh,burst
//     --pacing               also the pacing scenarios (3 processes x 40 requests; ~6 minutes with defaults)
//     --quick                with --pacing: every interval x0.1 and the mock's limit x10 (600/min), ~40 s
//
// The mock runs in this process; each measurement runs in a child process of the runtime under test.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawn, spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { startMockQwen, CLIENT_ID } from '../__test__/support/mock-qwen.mjs'
import { median } from './turns.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(HERE, '..')
const CLIENT = path.join(HERE, 'client.mjs')
const CHAT = '/v1/chat/completions'
const isBun = typeof globalThis.Bun !== 'undefined'

// ─── options ──────────────────────────────────────────────────────────────────────────────────────
const argv = process.argv.slice(2)
const flag = (name) => argv.includes(name)
const value = (name, dflt) => {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : dflt
}
const ROUNDS = Number(value('--rounds', 7))
const FETCH_MODULES = (value('--fetch-module')?.split(',') ?? []).filter(Boolean).map((p) => path.resolve(p))
/** The row name of an implementation: ours, or the other plugin's module file name. */
const whoName = (who) => (who === 'ours' ? 'ours' : path.basename(FETCH_MODULES[Number(who.slice('module'.length))], '.mjs'))
const ONLY = value('--only')?.split(',')
const want = (row) => !ONLY || ONLY.includes(row)
const PACING = flag('--pacing')
const QUICK = flag('--quick')

function findRuntimes() {
  const found = {}
  const nodeBin = isBun ? spawnSync('which', ['node']).stdout?.toString().trim() : process.execPath
  if (nodeBin) found.node = nodeBin
  const bunLocal = path.join(ROOT, 'node_modules', '.bin', process.platform === 'win32' ? 'bun.exe' : 'bun')
  if (isBun) found.bun = process.execPath
  else if (fs.existsSync(bunLocal)) found.bun = bunLocal
  const names = value('--runtimes')?.split(',') ?? Object.keys(found)
  return Object.fromEntries(names.map((n) => [n, found[n] ?? n]))
}
const RUNTIMES = findRuntimes()

// ─── the package under test ───────────────────────────────────────────────────────────────────────
function preparePackage() {
  if (value('--pkg')) return path.resolve(value('--pkg'))
  const dir = path.join(ROOT, 'target', 'bench-pkg')
  const built = fs.existsSync(dir) ? fs.readdirSync(dir).find((f) => f.endsWith('.node')) : undefined
  // A binding older than the sources would measure code that is gone (and may not fit api.cjs any more).
  const newest = (p) => {
    const st = fs.statSync(p)
    return st.isDirectory() ? Math.max(0, ...fs.readdirSync(p).map((f) => newest(path.join(p, f)))) : st.mtimeMs
  }
  const stale = () => {
    const at = fs.statSync(path.join(dir, built)).mtimeMs
    return ['src', 'Cargo.toml', 'Cargo.lock', 'build.rs'].some((f) => newest(path.join(ROOT, f)) > at)
  }
  if (flag('--build') || !built || stale()) {
    // Its own output dir: the debug addon in the repo root (used by the tests) stays as it is.
    process.stderr.write('building the release addon into target/bench-pkg ...\n')
    const npx = process.platform === 'win32' ? 'npx.cmd' : 'npx'
    const r = spawnSync(
      npx,
      ['napi', 'build', '--platform', '--release', '--js', 'binding.cjs', '--dts', 'binding.d.ts', '-o', dir],
      { cwd: ROOT, stdio: 'inherit' },
    )
    if (r.status !== 0) throw new Error('release build failed')
  }
  // Always the current JS adapter next to the release binding.
  fs.copyFileSync(path.join(ROOT, 'api.cjs'), path.join(dir, 'api.cjs'))
  return dir
}

// ─── helpers ──────────────────────────────────────────────────────────────────────────────────────
const tmpDirs = []
function qwenHomeWith(creds) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-bench-'))
  tmpDirs.push(dir)
  const home = path.join(dir, 'qwen-home')
  fs.mkdirSync(home, { mode: 0o700 })
  if (creds) {
    const { access_token, refresh_token, token_type, resource_url, expiry_date } = creds
    fs.writeFileSync(
      path.join(home, 'oauth_creds.json'),
      JSON.stringify({ access_token, refresh_token, token_type, resource_url, expiry_date }, null, 2),
      { mode: 0o600 },
    )
  }
  return home
}

/** HOME (and XDG dirs) of every client child: an empty temp dir, so no plugin under test can touch the real ones. */
let childHome = null
function homeEnv() {
  if (!childHome) {
    childHome = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-bench-home-'))
    tmpDirs.push(childHome)
  }
  const xdg = (d) => path.join(childHome, d)
  return { HOME: childHome, USERPROFILE: childHome, XDG_CONFIG_HOME: xdg('.config'), XDG_DATA_HOME: xdg('.local/share'), XDG_CACHE_HOME: xdg('.cache') }
}

/** A client child: resolves with its JSON result (stdout's last line). `onReady` gets control for go. */
function runClient(runtime, cfg, { onReady, env } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(RUNTIMES[runtime], [...(cfg.nodeArgs ?? []), CLIENT, JSON.stringify(cfg)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...homeEnv(), QWEN_HOME: cfg.qwenHome ?? '', ...env },
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => {
      stdout += d
      if (onReady && stdout.includes('{"ready":true}\n')) {
        const go = onReady
        onReady = null
        go(() => child.stdin.write('go\n'))
      }
    })
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    // 'close', not 'exit': stdout may still hold the result line when the process has exited.
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${runtime} client ${cfg.scenario} exited ${code}: ${stderr.slice(-2000)}`))
      const line = stdout.trim().split('\n').at(-1)
      const result = line?.startsWith('{"result"') ? JSON.parse(line).result : null
      if (!result) return reject(new Error(`${runtime} client ${cfg.scenario} printed no result (last line: ${line?.slice(0, 200)})`))
      resolve({ ...result, stderr })
    })
  })
}

const rows = []
function addRow(row) {
  rows.push(row)
  process.stderr.write(`  ${row.metric} [${row.runtime}] ${row.ratio == null ? '' : ratioText(row)} (${row.detail ?? ''})\n`)
}

const fmt = (x) => (x == null ? '—' : typeof x === 'number' ? (Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(2)) : String(x))

/** A row's ratio as the table shows it: with as many decimals (2 to 6) as tell it from its target (1.1003, not 1.10). */
function ratioText({ ratio, target }) {
  if (typeof ratio !== 'number' || typeof target !== 'number' || Math.abs(ratio) >= 100) return fmt(ratio)
  for (let digits = 2; digits <= 6; digits++) if (Number(ratio.toFixed(digits)) !== target) return ratio.toFixed(digits)
  return fmt(ratio)
}

// ─── scenarios ────────────────────────────────────────────────────────────────────────────────────
async function overheadRows(mock, pkg) {
  const issued = mock.issueTokens()
  const qwenHome = qwenHomeWith(issued)
  const impls = ['baseline', 'ours', ...FETCH_MODULES.map((_, i) => `module${i}`)]
  // Per-request rows also run the runtime's fetch sending our exact wire bytes (see client.mjs wireFetch), and
  // the timed rows an A/A control: the runtime's fetch once more, so each run shows its own noise.
  const withWire = [...impls, 'wire', 'control']
  const base = {
    apiPath: path.join(pkg, 'api.cjs'),
    url: `${mock.url}${CHAT}`,
    oauthBaseUrl: mock.url,
    qwenHome,
    token: issued.access_token,
    fetchModules: FETCH_MODULES,
    impls,
    rounds: ROUNDS,
  }
  const versus = (res, metric, runtime, unit, target, { lowerIsBetter = true } = {}) => {
    const b = median(res.baseline)
    const w = res.wire ? median(res.wire) : null
    const c = res.control ? median(res.control) : null
    for (const who of impls.slice(1)) {
      if (!res[who]) {
        addRow({ metric, runtime, who: whoName(who), value: null, unit, ratio: null, target, ok: null,
          detail: `not measured: ${res.skipped?.[who] ?? 'no result'}` })
        continue
      }
      const o = median(res[who])
      // Interleaved rows also report the ratio of the means (a slow tail shows there, not in the median).
      const meanRatio = res.means ? median(res.means[who]) / median(res.means.baseline) : null
      // The protocol's share: the same fetch with our bytes, against the baseline; the plugin's: ours against it.
      const wireNote = w == null ? '' : `; runtime fetch of the same bytes ${w.toFixed(1)} ${unit} (${(w / b).toFixed(2)}x): ${whoName(who)} ${(o / w).toFixed(2)}x of it`
      const controlNote = c == null ? '' : `; A/A control (the runtime's fetch again) ${(c / b).toFixed(2)}x`
      addRow({
        metric,
        runtime,
        who: whoName(who),
        baseline: b,
        value: o,
        unit,
        ratio: o / b,
        target,
        ok: lowerIsBetter ? o / b <= target : o / b >= target,
        meanRatio,
        wire: w,
        vsWire: w == null ? null : o / w,
        control: c == null ? null : c / b,
        detail: `${o.toFixed(1)} vs ${b.toFixed(1)} ${unit}${meanRatio ? `; means ${meanRatio.toFixed(2)}x` : ''}${wireNote}${controlNote}`,
      })
    }
  }
  for (const rt of Object.keys(RUNTIMES)) {
    mock.reset()
    if (want('seq')) {
      const res = await runClient(rt, { ...base, impls: withWire, scenario: 'sequential', n: 300, warmup: 50 })
      versus(res, 'small JSON, sequential (per request)', rt, 'µs', 1.1)
    }
    mock.reset()
    if (want('conc')) {
      const res = await runClient(rt, { ...base, impls: withWire, scenario: 'concurrent', n: 320, concurrency: 32 })
      versus(res, '32 concurrent (320 requests, total)', rt, 'ms', 1.1)
    }
    mock.reset()
    if (want('sse')) {
      mock.config.chunkDelayMs = 0
      const res = await runClient(rt, { ...base, impls: withWire, scenario: 'firstChunk', n: 100, warmup: 20 })
      versus(res, 'time to first SSE chunk', rt, 'µs', 1.05)
    }
    mock.reset()
    if (want('big')) {
      // 1600 SSE frames of 64 KiB content each: 100 MiB of content, one fresh process per run and fetch.
      const big = 'x'.repeat(65536)
      const chunks = Array(1600).fill(big)
      // Each fetch twice: as is, and with a full collection every 64 chunks ("held": what stays alive once
      // garbage is gone). Plus the runtime's floor: plain JS handing out fresh chunks, no network at all.
      const runs = Object.fromEntries(impls.map((i) => [i, []]))
      const held = Object.fromEntries(impls.map((i) => [i, []]))
      const floor = []
      const why = {}
      const gcArgs = rt === 'node' ? { nodeArgs: ['--expose-gc'] } : {}
      // One fresh process per run, as many runs as the timed rows have rounds: a run's RSS peak depends on when the
      // engine collects and sweeps (a busy box delays that), so a median of few runs moved with one late run.
      for (let r = 0; r < Math.max(3, ROUNDS); r++) {
        for (const who of r % 2 ? [...impls].reverse() : impls) {
          for (const [into, extra] of [[runs, {}], [held, { gcEvery: 64, ...gcArgs }]]) {
            mock.enqueue({ body: { choices: [] } })
            mock.enqueueStream({ chunks, intervalMs: 0 })
            const res = await runClient(rt, { ...base, ...extra, impls: [who], scenario: 'bigBody' })
            if (res[who]) into[who].push(res[who][0])
            else {
              why[who] = res.skipped?.[who] ?? 'no result'
              mock.reset() // the answers queued for it may be unread
            }
          }
        }
        floor.push((await runClient(rt, { ...base, scenario: 'plainStream' })).plain[0].rssGrowthMB)
      }
      const rss = (xs) => median(xs.map((x) => x.rssGrowthMB))
      // The runs behind a median, so a row near its target shows how often a single run lands on either side.
      const spread = (xs) => {
        const v = xs.map((x) => x.rssGrowthMB)
        return `${v.length} runs ${Math.min(...v).toFixed(1)}–${Math.max(...v).toFixed(1)} MB, ${v.filter((x) => x >= 16).length} at 16+`
      }
      const b = median(runs.baseline.map((x) => x.mbps))
      const bRss = rss(runs.baseline)
      const bHeld = rss(held.baseline)
      const plain = median(floor)
      for (const who of impls.slice(1)) {
        const name = whoName(who)
        if (!runs[who].length) {
          addRow({ metric: '100 MB streamed body', runtime: rt, who: name, value: null, ratio: null, target: null, ok: null,
            detail: `not measured: ${why[who]}` })
          continue
        }
        const o = median(runs[who].map((x) => x.mbps))
        const oRss = rss(runs[who])
        const oHeld = rss(held[who])
        addRow({ metric: '100 MB streamed body: throughput', runtime: rt, who: name, baseline: b, value: o, unit: 'MB/s',
          ratio: o / b, target: 0.9, ok: o / b >= 0.9, detail: `${o.toFixed(0)} vs ${b.toFixed(0)} MB/s` })
        addRow({ metric: '100 MB streamed body: peak RSS growth', runtime: rt, who: name, baseline: bRss, value: oRss,
          unit: 'MB', ratio: oRss / bRss, target: '< 16 MB', ok: oRss < 16,
          detail: `${oRss.toFixed(1)} vs ${bRss.toFixed(1)} MB; ${spread(runs[who])}; plain JS stream, no network: ${plain.toFixed(1)} MB` })
        addRow({ metric: '100 MB streamed body: peak RSS growth, full GC every 64 chunks (held)', runtime: rt, who: name,
          baseline: bHeld, value: oHeld, unit: 'MB', ratio: oHeld / bHeld, target: '< 16 MB', ok: oHeld < 16,
          detail: `${oHeld.toFixed(1)} vs ${bHeld.toFixed(1)} MB` })
      }
    }
  }
}

/** Fresh process each time: require() of the package vs a plain JS module exporting the same names. */
function requireRows(pkg) {
  const probe = path.join(HERE, 'require-probe.cjs')
  const plain = path.join(HERE, 'plain-api.cjs')
  const ours = path.join(pkg, 'api.cjs')
  for (const [rt, bin] of Object.entries(RUNTIMES)) {
    const t = { plain: [], ours: [] }
    for (let i = 0; i < 21; i++) {
      for (const [k, file] of i % 2 ? [['ours', ours], ['plain', plain]] : [['plain', plain], ['ours', ours]]) {
        const r = spawnSync(bin, [probe, file], { encoding: 'utf8' })
        if (r.status !== 0) throw new Error(`require probe (${rt}) failed: ${r.stderr}`)
        t[k].push(Number(r.stdout.trim()))
      }
    }
    const o = median(t.ours)
    const b = median(t.plain)
    addRow({ metric: 'require() of the package', runtime: rt, who: 'ours', baseline: b, value: o, unit: 'ms', ratio: o / b,
      target: '≤ 5 ms more', ok: o - b <= 5, detail: `+${(o - b).toFixed(2)} ms: ${o.toFixed(2)} vs ${b.toFixed(2)} ms (plain JS module)` })
  }
}

function sizeRow(pkg) {
  const file = fs.readdirSync(pkg).find((f) => f.endsWith('.node'))
  const bytes = fs.statSync(path.join(pkg, file)).size
  const mb = bytes / 1048576
  addRow({ metric: 'release .node size (stripped, LTO)', runtime: '-', who: 'ours', value: mb, unit: 'MiB', ratio: null,
    target: '≤ 4 MiB', ok: mb <= 4, detail: `${file}: ${bytes} B` })
}

async function refreshRows(mock, pkg) {
  for (const rt of Object.keys(RUNTIMES)) {
    mock.reset()
    const qwenHome = qwenHomeWith(mock.issueTokens())
    const bare = mock.issueTokens()
    // The floor: the same lock and file steps in plain JS with the runtime's own fs and fetch, on its own file.
    const floorHome = qwenHomeWith(mock.issueTokens())
    const res = await runClient(rt, {
      scenario: 'refresh', apiPath: path.join(pkg, 'api.cjs'), oauthBaseUrl: mock.url, qwenHome, floorHome,
      bareRefreshToken: bare.refresh_token, clientId: CLIENT_ID, rounds: ROUNDS, n: 20, warmup: 5,
    })
    const o = median(res.ours)
    const b = median(res.baseline)
    const f = median(res.floor)
    addRow({ metric: 'token refresh (lock + file + HTTP) vs bare HTTP refresh', runtime: rt, who: 'ours', baseline: b,
      value: o, unit: 'µs', ratio: o / b, target: 1.5, ok: o / b <= 1.5, floor: f, vsFloor: o / f,
      detail: `${o.toFixed(0)} vs ${b.toFixed(0)} µs; the same lock + file steps in plain JS (runtime fs + fetch) ` +
        `${f.toFixed(0)} µs (${(f / b).toFixed(2)}x): ours ${(o / f).toFixed(2)}x of it` })
  }
}

/** Start children that each load and wait; release them together; collect their results. */
async function together(specs) {
  let readyCount = 0
  const gos = []
  let allReady
  const ready = new Promise((r) => (allReady = r))
  const done = specs.map(({ runtime, cfg }) =>
    runClient(runtime, cfg, {
      onReady: (go) => {
        gos.push(go)
        if (++readyCount === specs.length) allReady()
      },
    }),
  )
  await Promise.race([ready, Promise.all(done)])
  for (const go of gos) go()
  return Promise.all(done)
}

async function burstRows(mock, pkg) {
  for (const rt of Object.keys(RUNTIMES)) {
    mock.reset()
    const qwenHome = qwenHomeWith(mock.issueTokens({ expiresInSec: -60 }))
    const cfg = { scenario: 'burst', apiPath: path.join(pkg, 'api.cjs'), url: `${mock.url}${CHAT}`, oauthBaseUrl: mock.url, qwenHome, n: 10 }
    const results = await together(Array.from({ length: 8 }, () => ({ runtime: rt, cfg })))
    const statuses = results.flatMap((r) => r.statuses)
    const ok200 = statuses.filter((s) => s === 200).length
    addRow({ metric: '8 processes x 10 concurrent, expired token: refresh grants', runtime: rt, who: 'ours',
      value: mock.refreshGrants, unit: 'grants', ratio: null, target: 'exactly 1', ok: mock.refreshGrants === 1 && ok200 === 80,
      detail: `${mock.refreshGrants} grant(s), ${ok200}/80 answered 200${ok200 === 80 ? '' : ` (others: ${statuses.filter((s) => s !== 200).join(', ')})`}` })
  }
}

async function pacingRows(mock, pkg) {
  const scale = QUICK ? 0.1 : 1
  const rts = Object.keys(RUNTIMES)
  const scenarios = [
    { name: 'defaults', min: 1000, jmin: 500, jmax: 1500 },
    { name: '1 s, no jitter', min: 1000, jmin: 0, jmax: 0 },
  ]
  for (const sc of scenarios) {
    const min = sc.min * scale
    const jmin = sc.jmin * scale
    const jmax = sc.jmax * scale
    mock.reset()
    mock.config.rateLimitPerMinute = Math.round(60 / scale)
    const qwenHome = qwenHomeWith(mock.issueTokens())
    const options = { minIntervalMs: min, jitterMinMs: jmin, jitterMaxMs: jmax }
    // Mixed runtimes share the one pacing state file, as OpenCode (Bun) and a Node tool would.
    const specs = [0, 1, 2].map((i) => ({
      runtime: rts[i % rts.length],
      cfg: { scenario: 'paced', apiPath: path.join(pkg, 'api.cjs'), url: `${mock.url}${CHAT}`, oauthBaseUrl: mock.url, qwenHome, n: 40, options },
    }))
    const t0 = Date.now()
    const results = await together(specs)
    const secs = (Date.now() - t0) / 1000
    const statuses = results.flatMap((r) => r.statuses)
    const recs = mock.requestsTo(CHAT)
    const n429 = recs.filter((r) => r.status === 429).length
    const starts = results
      .flatMap((r) => [...r.stderr.matchAll(/pacing: start at (\d+) ms/g)].map((m) => Number(m[1])))
      .sort((a, b) => a - b)
    const gaps = starts.slice(1).map((t, i) => t - starts[i])
    const arrivals = recs.map((r) => r.hr).sort((a, b) => a - b)
    const arrivalGaps = arrivals.slice(1).map((t, i) => t - arrivals[i])
    const minGap = Math.min(...gaps)
    const achievedPerMin = ((starts.length - 1) / (starts.at(-1) - starts[0])) * 60_000
    const allowedPerMin = Math.min(60_000 / (min + (jmin + jmax) / 2), mock.config.rateLimitPerMinute)
    const rate = achievedPerMin / allowedPerMin
    // A request retried after a connection error (a server closing an idle keep-alive connection as it is
    // reused) starts once more, through pacing like any other: more than 120 starts is not a failure.
    const ok = n429 === 0 && minGap >= min + jmin && rate >= 0.95 && statuses.every((s) => s === 200) && starts.length >= 120
    addRow({ metric: `3 processes x 40 requests, pacing ${sc.name}${QUICK ? ' (quick: x0.1, limit 600/min)' : ''}`,
      runtime: specs.map((s) => s.runtime).join('+'), who: 'ours', value: rate, unit: 'of allowed rate', ratio: rate,
      target: '0 x 429, gaps ≥ floor, ≥ 0.95', ok,
      detail: `${n429} x 429; ${statuses.filter((s) => s === 200).length}/120 answered 200; ${starts.length}/120 starts logged; ` +
        `min start gap ${minGap} ms (floor ${min + jmin}); min arrival gap ${Math.min(...arrivalGaps).toFixed(1)} ms; ` +
        `${achievedPerMin.toFixed(1)}/min of ${allowedPerMin.toFixed(1)}/min allowed; ${secs.toFixed(0)} s` })
  }
}

// ─── report ───────────────────────────────────────────────────────────────────────────────────────
function machine() {
  const cpus = os.cpus()
  const ver = (bin) => spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout?.trim()
  return {
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    cpu: `${cpus[0]?.model ?? '?'} x${cpus.length}`,
    memGB: +(os.totalmem() / 2 ** 30).toFixed(1),
    runtimes: Object.fromEntries(Object.entries(RUNTIMES).map(([k, b]) => [k, ver(b)])),
  }
}

function table() {
  const lines = [
    '| metric | runtime | who | ratio | target | ok | detail |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.metric} | ${r.runtime} | ${r.who} | ${ratioText(r)} | ${fmt(r.target)} | ${r.ok == null ? '—' : r.ok ? 'yes' : '**no**'} | ${r.detail} |`),
  ]
  return lines.join('\n')
}

async function main() {
  const pkg = preparePackage()
  const mock = await startMockQwen({ config: {} })
  const started = new Date().toISOString()
  try {
    process.stderr.write(`bench: runtimes ${Object.keys(RUNTIMES).join(', ')}; package ${pkg}; server on ${isBun ? 'bun' : 'node'}\n`)
    if (want('seq') || want('conc') || want('sse') || want('big')) await overheadRows(mock, pkg)
    if (want('require')) requireRows(pkg)
    if (want('size')) sizeRow(pkg)
    if (want('refresh')) await refreshRows(mock, pkg)
    if (want('burst')) await burstRows(mock, pkg)
    if (PACING) await pacingRows(mock, pkg)
    else process.stderr.write('  (pacing scenarios skipped: pass --pacing, or --pacing --quick for scaled intervals)\n')
  } finally {
    await mock.close()
    for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true })
  }
  const command = `${isBun ? 'bun' : 'node'} bench/run.mjs ${argv.join(' ')}`.trim()
  const report = { started, command, machine: machine(), server: isBun ? 'bun' : 'node', rounds: ROUNDS, rows }
  fs.mkdirSync(path.join(HERE, 'results'), { recursive: true })
  fs.writeFileSync(path.join(HERE, 'results', 'latest.json'), JSON.stringify(report, null, 2) + '\n')
  process.stdout.write(`\n${command}\n${JSON.stringify(report.machine)}\n\n${table()}\n\nwritten: bench/results/latest.json\n`)
}

await main()
