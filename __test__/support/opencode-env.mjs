// An isolated, offline OpenCode world for end-to-end tests and the demo: real `opencode` (npm opencode-ai,
// a dev dependency) with this package as its plugin, every path (HOME, XDG dirs, QWEN_HOME, project) in one
// temp dir, and every network-bound OpenCode feature switched off. Facts behind each setting:
// ../../../shared/docs/opencode-host.md (§3 loading, §4 offline recipe, §5 serve API).
//
// ─── API ─────────────────────────────────────────────────────────────────────────────────────────
//   import { createOpenCodeEnv } from './support/opencode-env.mjs'
//   const oc = await createOpenCodeEnv({
//     oauthBaseUrl: mock.url,        // plugin option (the mock Qwen server)
//     pluginOptions: { ... },        // merged over the test defaults (no pacing: minIntervalMs/jitter 0)
//     defaultPacing: true,           // keep the plugin's default pacing instead
//     projectConfigDir: true,        // also create <project>/.opencode (pre-seeded like every config dir)
//     env: { ... },                  // extra env vars for every OpenCode process
//     qwenCreds: {...},              // seed $QWEN_HOME/oauth_creds.json (object, written 0600)
//     openCodeAuth: {...},           // seed OpenCode's auth.json (object keyed by provider id)
//   })
//   oc.root / oc.paths {home, configDir, dataDir, cacheDir, stateDir, qwenHome, project}
//   oc.env                            the environment every OpenCode child gets
//   await oc.run(prompt, { timeoutMs, args, onStdout }) → { code, signal, stdout, stderr, ms }
//   await oc.exec(args, { timeoutMs }) → same, any opencode subcommand (e.g. ['models'])
//   const srv = await oc.serve({ timeoutMs })  → { url, providerAuthMethods(), authorize(i, inputs?),
//                                                callback(i, code?), providers(), request(), output(), close() }
//       providerAuthMethods / authorize / providers resolve with the route's JSON (throw on non-200);
//       callback blocks until the plugin's callback() settled and resolves with { status, json, text }
//       (200 + true on success, 400 ProviderAuthOauthCallbackFailed otherwise).
//   oc.authJson()   OpenCode's auth.json parsed, or null
//   oc.qwenCreds()  { json, raw, keys, mode } of $QWEN_HOME/oauth_creds.json, or null
//   oc.writeQwenCreds(obj) / oc.writeAuthJson(obj)
//   await oc.cleanup()  kills every child it started (by PID, its process group) and removes the temp dir;
//                       also runs on process 'exit' for whatever is still alive.

import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

export const PACKAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
export const OPENCODE_BIN = path.join(PACKAGE_DIR, 'node_modules', '.bin', 'opencode')
export const MODEL = 'qwen-code/coder-model'
export const PROVIDER_ID = 'qwen-code'

/** The `@opencode-ai/plugin` version OpenCode would otherwise `npm install` into each config dir. */
function pluginSdkVersion() {
  try {
    const pj = path.join(PACKAGE_DIR, 'node_modules', '@opencode-ai', 'plugin', 'package.json')
    return JSON.parse(fs.readFileSync(pj, 'utf8')).version
  } catch {
    return '1.18.33'
  }
}

// Every child of every env, so an 'exit' hook can kill what a crashed test left behind.
const liveChildren = new Set()
let exitHookInstalled = false
function installExitHook() {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const child of liveChildren) killTree(child, 'SIGKILL')
  })
}

/** Each child leads its own process group (detached), so the group id is its PID. */
function killTree(child, signal = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return
  try {
    process.kill(-child.pid, signal)
  } catch {
    try {
      child.kill(signal)
    } catch {
      /* already gone */
    }
  }
}

/** Write JSON with mode 0600 (the mode real credential files have). */
function writeSecretJson(file, obj) {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
  fs.writeFileSync(file, JSON.stringify(obj, null, 2), { mode: 0o600 })
  fs.chmodSync(file, 0o600)
}

/**
 * OpenCode runs `npm install @opencode-ai/plugin@<ver>` in every config dir that lacks it (registry access,
 * +5–9 s). A package.json, a package-lock.json naming the dependency, and a node_modules dir stop that.
 */
export function seedConfigDir(dir) {
  const version = pluginSdkVersion()
  fs.mkdirSync(path.join(dir, 'node_modules'), { recursive: true })
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ dependencies: { '@opencode-ai/plugin': version } }))
  fs.writeFileSync(
    path.join(dir, 'package-lock.json'),
    JSON.stringify({ lockfileVersion: 3, packages: { '': { dependencies: { '@opencode-ai/plugin': version } } } }),
  )
}

/** Environment for OpenCode children: a clean base, nothing inherited that could reach the user's setup. */
function baseEnv() {
  const keep = ['PATH', 'LANG', 'LC_ALL', 'TERM', 'TZ', 'SYSTEMROOT', 'TMPDIR']
  const env = {}
  for (const k of keep) if (process.env[k] !== undefined) env[k] = process.env[k]
  // Coverage / test runner variables are fine to drop; tokens and user config are what must not leak in.
  return env
}

const deadline = (ms) => Date.now() + ms

/** A port nothing listens on right now (the kernel's pick for port 0 on loopback). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

export async function createOpenCodeEnv(opts = {}) {
  installExitHook()
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'oc-e2e-'))
  const paths = {
    home: path.join(root, 'home'),
    configDir: path.join(root, 'config', 'opencode'),
    dataDir: path.join(root, 'data', 'opencode'),
    cacheDir: path.join(root, 'cache'),
    stateDir: path.join(root, 'state'),
    qwenHome: path.join(root, 'qwen'),
    project: path.join(root, 'proj'),
  }
  for (const p of Object.values(paths)) fs.mkdirSync(p, { recursive: true })
  fs.chmodSync(paths.qwenHome, 0o700)
  seedConfigDir(paths.configDir)
  if (opts.projectConfigDir) seedConfigDir(path.join(paths.project, '.opencode'))

  const pluginOptions = {
    ...(opts.oauthBaseUrl ? { oauthBaseUrl: opts.oauthBaseUrl } : {}),
    // Tests measure protocol waits (Retry-After), not our pacing: pacing off unless `defaultPacing`.
    ...(opts.defaultPacing ? {} : { minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0 }),
    ...(opts.pluginOptions || {}),
  }
  // The package directory (package.json "exports" → index.js) as a file URL. Verified offline with
  // OpenCode 1.18.33: `file:///abs/dir` and the bare `/abs/dir` both load it and register the models.
  const pluginSpec = opts.pluginSpec ?? pathToFileURL(PACKAGE_DIR).href
  const config = {
    $schema: 'https://opencode.ai/config.json',
    plugin: [[pluginSpec, pluginOptions]],
    autoupdate: false,
    share: 'disabled',
    model: MODEL,
    small_model: MODEL,
    enabled_providers: [PROVIDER_ID],
    ...(opts.config || {}),
  }
  fs.writeFileSync(path.join(paths.project, 'opencode.json'), JSON.stringify(config, null, 2))

  const env = {
    ...baseEnv(),
    HOME: paths.home,
    USERPROFILE: paths.home,
    XDG_CONFIG_HOME: path.dirname(paths.configDir),
    XDG_DATA_HOME: path.dirname(paths.dataDir),
    XDG_CACHE_HOME: paths.cacheDir,
    XDG_STATE_HOME: paths.stateDir,
    QWEN_HOME: paths.qwenHome,
    OPENCODE_DISABLE_AUTOUPDATE: '1',
    OPENCODE_DISABLE_MODELS_FETCH: '1',
    OPENCODE_DISABLE_SHARE: '1',
    OPENCODE_DISABLE_LSP_DOWNLOAD: '1',
    OPENCODE_DISABLE_DEFAULT_PLUGINS: '1',
    OPENCODE_DISABLE_CLAUDE_CODE: '1',
    OPENCODE_DISABLE_EXTERNAL_SKILLS: '1',
    // Never open a browser from the device login.
    QWEN_OAUTH_NO_BROWSER: '1',
    ...(opts.oauthBaseUrl ? { OPENCODE_MODELS_URL: opts.oauthBaseUrl } : {}), // safety net: the mock answers /api.json
    ...(opts.env || {}),
  }

  if (opts.qwenCreds) writeSecretJson(path.join(paths.qwenHome, 'oauth_creds.json'), opts.qwenCreds)
  if (opts.openCodeAuth) writeSecretJson(path.join(paths.dataDir, 'auth.json'), opts.openCodeAuth)

  const children = new Set()

  function start(args, { cwd = paths.project } = {}) {
    const child = spawn(OPENCODE_BIN, args, {
      cwd,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // own process group: kill(-pid) also reaches anything OpenCode spawned
    })
    children.add(child)
    liveChildren.add(child)
    child.on('exit', () => {
      children.delete(child)
      liveChildren.delete(child)
    })
    return child
  }

  /** Spawn opencode and collect its output; kills it (group) at the deadline and says so in stderr. */
  function exec(args, { timeoutMs = 60_000, onStdout, onStderr } = {}) {
    const started = Date.now()
    const child = start(args)
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8')
    child.stderr.setEncoding('utf8')
    child.stdout.on('data', (d) => {
      stdout += d
      onStdout?.(d)
    })
    child.stderr.on('data', (d) => {
      stderr += d
      onStderr?.(d)
    })
    return new Promise((resolve, reject) => {
      let timedOut = false
      const timer = setTimeout(() => {
        timedOut = true
        killTree(child, 'SIGKILL')
      }, timeoutMs)
      child.on('error', (err) => {
        clearTimeout(timer)
        reject(err)
      })
      child.on('close', (code, signal) => {
        clearTimeout(timer)
        if (timedOut) stderr += `\n[opencode-env] opencode ${args[0]} killed after ${timeoutMs} ms\n`
        resolve({ code, signal, stdout, stderr, ms: Date.now() - started, timedOut })
      })
    })
  }

  function run(prompt, { timeoutMs = 60_000, args = [], onStdout, onStderr } = {}) {
    return exec(['run', '--model', MODEL, ...args, prompt], { timeoutMs, onStdout, onStderr })
  }

  /**
   * `opencode serve` on a free loopback port and a small client for its auth routes. (`--port 0` is no
   * good: OpenCode then tries 4096 first, which parallel runs would share.) A port taken between our probe
   * and OpenCode's bind makes serve exit; then we try another one.
   */
  async function serve({ timeoutMs = 30_000, args = [] } = {}) {
    let lastErr
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort()
      try {
        return await serveOn(port, { timeoutMs, args })
      } catch (err) {
        lastErr = err
        if (!/EADDRINUSE|address already in use|port .* in use/i.test(String(err.message))) throw err
      }
    }
    throw lastErr
  }

  async function serveOn(port, { timeoutMs, args }) {
    const child = start(['serve', '--port', String(port), '--hostname', '127.0.0.1', ...args])
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8')
    child.stderr.setEncoding('utf8')
    const url = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        killTree(child, 'SIGKILL')
        reject(new Error(`opencode serve printed no listening line within ${timeoutMs} ms; stderr: ${err.slice(-2000)}`))
      }, timeoutMs)
      const check = () => {
        const m = /listening on (http:\/\/[^\s]+)/.exec(out)
        if (m) {
          clearTimeout(timer)
          resolve(m[1].replace(/\/$/, ''))
        }
      }
      child.stdout.on('data', (d) => {
        out += d
        check()
      })
      child.stderr.on('data', (d) => {
        err += d
      })
      child.on('exit', (code, signal) => {
        clearTimeout(timer)
        reject(new Error(`opencode serve exited (${code ?? signal}) before listening; stderr: ${err.slice(-2000)}`))
      })
    })
    const dirQuery = `directory=${encodeURIComponent(paths.project)}`

    async function request(method, route, body, { timeoutMs: t = 30_000 } = {}) {
      const sep = route.includes('?') ? '&' : '?'
      const res = await fetch(`${url}${route}${sep}${dirQuery}`, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(t),
      })
      const text = await res.text()
      let json = null
      try {
        json = text ? JSON.parse(text) : null
      } catch {
        /* not JSON */
      }
      return { status: res.status, json, text }
    }
    const ok = (r, what) => {
      if (r.status !== 200) throw new Error(`${what}: HTTP ${r.status} ${r.text.slice(0, 500)}`)
      return r.json
    }

    return {
      url,
      child,
      output: () => ({ stdout: out, stderr: err }),
      request,
      providerAuthMethods: async () => ok(await request('GET', '/provider/auth'), 'GET /provider/auth'),
      providers: async () => ok(await request('GET', '/provider'), 'GET /provider'),
      authorize: async (method = 0, inputs) =>
        ok(
          await request('POST', `/provider/${PROVIDER_ID}/oauth/authorize`, inputs ? { method, inputs } : { method }),
          'POST oauth/authorize',
        ),
      // Blocks until the plugin's callback() resolved (the device login finished or failed).
      callback: async (method = 0, code, { timeoutMs: t = 60_000 } = {}) =>
        request('POST', `/provider/${PROVIDER_ID}/oauth/callback`, code === undefined ? { method } : { method, code }, {
          timeoutMs: t,
        }),
      close: () => stopChild(child),
    }
  }

  /** SIGTERM, then SIGKILL if it is still alive after the grace period; resolves once it exited. */
  function stopChild(child, graceMs = 3000) {
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
    return new Promise((resolve) => {
      const timer = setTimeout(() => killTree(child, 'SIGKILL'), graceMs)
      child.once('exit', () => {
        clearTimeout(timer)
        resolve()
      })
      killTree(child, 'SIGTERM')
    })
  }

  function readJson(file) {
    try {
      return JSON.parse(fs.readFileSync(file, 'utf8'))
    } catch (err) {
      if (err.code === 'ENOENT') return null
      throw err
    }
  }

  const authFile = path.join(paths.dataDir, 'auth.json')
  const credsFile = path.join(paths.qwenHome, 'oauth_creds.json')

  return {
    root,
    paths,
    env,
    config,
    pluginOptions,
    authFile,
    credsFile,
    run,
    exec,
    serve,
    authJson: () => readJson(authFile),
    qwenCreds: () => {
      let raw
      try {
        raw = fs.readFileSync(credsFile, 'utf8')
      } catch (err) {
        if (err.code === 'ENOENT') return null
        throw err
      }
      const json = JSON.parse(raw)
      return { json, raw, keys: Object.keys(json), mode: fs.statSync(credsFile).mode & 0o777 }
    },
    writeQwenCreds: (obj) => writeSecretJson(credsFile, obj),
    writeAuthJson: (obj) => writeSecretJson(authFile, obj),
    /** Poll a condition until it holds (no sleeps as synchronisation elsewhere). */
    waitFor: async (cond, { timeoutMs = 10_000, intervalMs = 50, what = 'condition' } = {}) => {
      const until = deadline(timeoutMs)
      for (;;) {
        const v = await cond()
        if (v) return v
        if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
        await new Promise((r) => setTimeout(r, intervalMs))
      }
    },
    cleanup: async () => {
      await Promise.all([...children].map((c) => stopChild(c, 2000)))
      fs.rmSync(root, { recursive: true, force: true })
    },
  }
}
