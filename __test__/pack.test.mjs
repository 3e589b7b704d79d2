// What users get from npm: `npm pack` the main package and this machine's platform package (from a temp copy
// of npm/<platform>/ with the built addon copied in; the repo's npm/ dir is never written), check that the
// tarballs hold only what users need, install them offline the way OpenCode installs a plugin named in
// opencode.json, and run the real OpenCode against the mock Qwen server: it answers.
// Run: node --test __test__/pack.test.mjs   (build the addon first: npm run build)
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { startMockQwen } from './support/mock-qwen.mjs'
import { createOpenCodeEnv, freePort, PACKAGE_DIR, PROVIDER_ID } from './support/opencode-env.mjs'

const ROOT = PACKAGE_DIR
const PKG = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
const NAME = PKG.name
const CHAT = '/v1/chat/completions'
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm'

/** The only files the main tarball may hold (README.md and its translations, e.g. README.zh-CN.md, too). */
const ALLOWED = new Set([
  'package.json',
  'index.js',
  'index.d.ts',
  'api.cjs',
  'api.d.ts',
  'cli.cjs',
  'binding.cjs',
  'binding.d.ts',
  'CHANGELOG.md',
  'LICENSE',
])
const REQUIRED = ['package.json', 'index.js', 'index.d.ts', 'api.cjs', 'api.d.ts', 'cli.cjs', 'binding.cjs', 'binding.d.ts', 'README.md', 'LICENSE', 'CHANGELOG.md']
const isAllowed = (f) => ALLOWED.has(f) || /^README(\.[A-Za-z-]+)?\.md$/.test(f)

const kB = (n) => `${(n / 1024).toFixed(1)} kB`
const MB = (n) => `${(n / 1024 / 1024).toFixed(2)} MB`

function run(cmd, args, { cwd, env = process.env, timeoutMs = 120_000, shell = false } = {}) {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { cwd, env, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, shell },
      (err, stdout, stderr) => {
        if (err) {
          err.message += `\n--- stdout\n${String(stdout).slice(-2000)}\n--- stderr\n${String(stderr).slice(-3000)}`
          reject(err)
        } else resolve({ stdout, stderr })
      },
    )
  })
}

/** npm with its own empty cache and no registry needed: every input is a local tarball or directory. */
function npm(args, opts) {
  // npm is a .cmd script on Windows, which Node only starts through a shell.
  return run(NPM, [...args, '--no-audit', '--no-fund', '--cache', path.join(work, 'npm-cache')], {
    ...opts,
    shell: process.platform === 'win32',
  })
}

/** `npm pack --json` of a directory into `work`; returns npm's description of the tarball. */
async function pack(dir) {
  const { stdout } = await npm(['pack', '--json', '--pack-destination', work], { cwd: dir })
  const [info] = JSON.parse(stdout)
  info.tarball = path.join(work, info.filename)
  info.paths = info.files.map((f) => f.path.replace(/\\/g, '/'))
  return info
}

/** The npm/<platform> package this machine needs, from the generated manifests' os/cpu/libc fields. */
function hostPlatformPackage() {
  const glibc = process.report?.getReport?.()?.header?.glibcVersionRuntime
  const libc = process.platform === 'linux' ? (glibc ? 'glibc' : 'musl') : null
  for (const abi of fs.readdirSync(path.join(ROOT, 'npm'))) {
    const manifest = path.join(ROOT, 'npm', abi, 'package.json')
    if (!fs.existsSync(manifest)) continue
    const pj = JSON.parse(fs.readFileSync(manifest, 'utf8'))
    if (!pj.os?.includes(process.platform) || !pj.cpu?.includes(process.arch)) continue
    if (pj.libc && !pj.libc.includes(libc)) continue
    return { abi, dir: path.dirname(manifest), pj }
  }
  return null
}

/** A mock whose port has none of the digits OpenCode treats as retryable status codes in error messages. */
async function startMock() {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort()
    if (/429|50[0234]|524/.test(String(port))) continue
    try {
      const mock = await startMockQwen({ port })
      mock.config.resourceUrl = mock.url // API base on plain-HTTP loopback
      return mock
    } catch (err) {
      if (err.code !== 'EADDRINUSE' || attempt > 5) throw err
    }
  }
}

let work
let host
let mainPack
let platformPack

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-pack-'))
  host = hostPlatformPackage()
  assert.ok(host, `npm/ has a platform package for ${process.platform}-${process.arch}`)
  const binary = path.join(ROOT, host.pj.main)
  assert.ok(fs.existsSync(binary), `${host.pj.main} is built (npm run build)`)

  mainPack = await pack(ROOT)

  // The platform package as `napi artifacts` leaves it at publish time, but in a temp copy.
  const platformDir = path.join(work, `pkg-${host.abi}`)
  fs.cpSync(host.dir, platformDir, { recursive: true })
  fs.copyFileSync(binary, path.join(platformDir, host.pj.main))
  platformPack = await pack(platformDir)
})

after(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true })
})

test('the main tarball holds only what users need', (t) => {
  const files = mainPack.paths
  t.diagnostic(`${mainPack.filename}: ${kB(mainPack.size)} packed, ${kB(mainPack.unpackedSize)} unpacked, ${files.length} files: ${files.join(' ')}`)
  assert.equal(mainPack.name, NAME)
  assert.equal(mainPack.version, PKG.version)
  const unexpected = files.filter((f) => !isAllowed(f))
  assert.deepEqual(unexpected, [], 'no tests, Rust sources, build output, binaries or tooling in the tarball')
  for (const f of REQUIRED) assert.ok(files.includes(f), `${f} is in the tarball`)
  // Everything package.json points users at must ship.
  for (const entry of Object.values(PKG.exports)) {
    for (const target of typeof entry === 'string' ? [entry] : Object.values(entry)) {
      assert.ok(files.includes(target.replace(/^\.\//, '')), `export target ${target} is in the tarball`)
    }
  }
  assert.ok(files.includes(PKG.main) && files.includes(PKG.types), 'main and types ship')
  assert.ok(!files.some((f) => f.endsWith('.node')), 'no native binary in the main package (it comes from the platform package)')
  // JS, typings and docs only: a few tens of kB. A stray binary or directory would blow far past this.
  assert.ok(mainPack.size < 200 * 1024, `packed size ${kB(mainPack.size)} stays small`)
})

test('the platform package tarball holds the addon and its manifest only', (t) => {
  const files = platformPack.paths
  const addon = platformPack.files.find((f) => f.path === host.pj.main)
  t.diagnostic(
    `${platformPack.filename}: ${MB(platformPack.size)} packed, ${MB(platformPack.unpackedSize)} unpacked ` +
      `(addon ${MB(addon?.size ?? 0)}); files: ${files.join(' ')}`,
  )
  assert.equal(platformPack.name, `${NAME}-${host.abi}`, 'named <main package>-<platform>, as the loader requires it')
  assert.equal(platformPack.version, PKG.version, 'versioned together with the main package')
  assert.deepEqual([...files].sort(), [host.pj.main, 'README.md', 'package.json'].sort())
  assert.ok(addon && addon.size > 100 * 1024, 'the addon itself is in it')
  assert.ok(!fs.existsSync(path.join(host.dir, host.pj.main)), 'the repo’s npm/ dir was not written')
})

test('installed from the tarballs, the real OpenCode loads the plugin by name and answers', { timeout: 240_000 }, async (t) => {
  const mock = await startMock()
  // README: `"plugin": ["opencode-qwen-oauth"]` in opencode.json; options through their documented env vars.
  const oc = await createOpenCodeEnv({
    oauthBaseUrl: mock.url,
    config: { plugin: [NAME] },
    env: {
      QWEN_OAUTH_BASE_URL: mock.url,
      QWEN_PACING_INTERVAL_MS: '0',
      QWEN_PACING_JITTER_MIN_MS: '0',
      QWEN_PACING_JITTER_MAX_MS: '0',
      // OpenCode installs plugins with npm's own config: keep it off the registry, so only the tarballs
      // installed below can satisfy the plugin (the name is also taken on the public registry).
      npm_config_offline: 'true',
    },
  })
  t.after(async () => {
    await oc.cleanup()
    await mock.close()
  })

  // OpenCode 1.18 resolves a bare plugin name to $XDG_CACHE_HOME/opencode/packages/<name>@latest/node_modules/<name>
  // and npm-installs it there (scripts off) when missing. Install our tarballs there, offline, as it would.
  const pluginHome = path.join(oc.paths.cacheDir, 'opencode', 'packages', `${NAME}@latest`)
  fs.mkdirSync(pluginHome, { recursive: true })
  await npm(['install', '--offline', '--ignore-scripts', mainPack.tarball, platformPack.tarball], { cwd: pluginHome })
  const installed = path.join(pluginHome, 'node_modules', NAME)
  assert.ok(!fs.readdirSync(installed).some((f) => f.endsWith('.node')), 'the installed main package has no addon of its own')
  // The generated loader (binding.cjs) finds the platform package by name from the main package.
  const resolved = createRequire(path.join(installed, 'binding.cjs')).resolve(`${NAME}-${host.abi}`)
  assert.equal(path.dirname(resolved), path.join(pluginHome, 'node_modules', `${NAME}-${host.abi}`))

  const login = mock.issueTokens()
  oc.writeQwenCreds({
    access_token: login.access_token,
    refresh_token: login.refresh_token,
    token_type: 'Bearer',
    resource_url: mock.url,
    expiry_date: login.expiry_date,
  })

  const r = await oc.run('Say hello', { timeoutMs: 120_000 })
  const describe = `rc=${r.code} ${r.ms} ms\n--- stdout\n${r.stdout.slice(-1500)}\n--- stderr\n${r.stderr.slice(-3000)}`
  assert.equal(r.code, 0, describe)
  assert.ok(r.stdout.includes(mock.config.replyText), describe)
  const chats = mock.requestsTo(CHAT)
  assert.ok(chats.length >= 1, 'the mock saw the chat requests')
  for (const req of chats) {
    // Sent by the plugin's native pipeline (Qwen Code CLI headers), with the stored login.
    assert.match(req.headers['user-agent'] ?? '', /^QwenCode\/\S+ \([^;]+; [^)]+\)$/)
    assert.ok(req.headers.authorization === `Bearer ${login.access_token}`, 'Authorization carries the stored token')
    assert.equal(req.status, 200)
  }
  // OpenCode used what we installed: still our version, not replaced by an install of its own.
  const used = JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8'))
  assert.equal(used.version, PKG.version)
  assert.ok(oc.authJson()?.[PROVIDER_ID], 'the Qwen CLI login was adopted into OpenCode’s store')
})

test('installed from the tarballs, the companion command runs from node_modules/.bin', async () => {
  const dir = path.join(work, 'bin-install')
  fs.mkdirSync(dir)
  await npm(['install', '--offline', '--ignore-scripts', mainPack.tarball, platformPack.tarball], { cwd: dir })
  const bin = path.join(dir, 'node_modules', '.bin', process.platform === 'win32' ? 'opencode-qwen-oauth.cmd' : 'opencode-qwen-oauth')
  const opts = { cwd: dir, shell: process.platform === 'win32' }
  const version = await run(bin, ['--version'], opts)
  assert.equal(version.stdout.trim(), PKG.version)
  // No OpenCode here and nobody logged in: status still answers, from the installed native core.
  const env = { ...process.env, XDG_DATA_HOME: path.join(dir, 'data'), QWEN_HOME: '' }
  const qwenHome = path.join(dir, 'qwen-home')
  const status = await run(bin, ['status', '--qwen-home', qwenHome], { ...opts, env })
  assert.match(status.stdout, /Qwen OAuth login: not logged in/)
  assert.match(status.stdout, /today {8}0 of 1000/)
})

test('without its platform package the main package fails with a message naming the platform', async () => {
  const dir = path.join(work, 'main-only')
  fs.mkdirSync(dir)
  await npm(['install', '--offline', '--ignore-scripts', mainPack.tarball], { cwd: dir })
  const env = { ...process.env }
  delete env.NAPI_RS_NATIVE_LIBRARY_PATH
  const probe =
    `try { require(${JSON.stringify(NAME + '/api')}); console.log(JSON.stringify({ loaded: true })) }` +
    ` catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }`
  const { stdout } = await run(process.execPath, ['-e', probe], { cwd: dir, env })
  const out = JSON.parse(stdout.trim().split('\n').pop())
  assert.equal(out.loaded, undefined, 'no addon can load without the platform package')
  assert.equal(out.code, 'E_NO_NATIVE_ADDON')
  const arch = `${process.platform}-${process.arch}`
  assert.ok(out.message.includes(arch), `the message names ${arch}: ${out.message}`)
})
