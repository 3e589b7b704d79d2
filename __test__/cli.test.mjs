// The companion command `opencode-qwen-oauth login | status | logout` (cli.cjs), run as a real child process
// against the mock Qwen server, with a private QWEN_HOME and XDG_DATA_HOME (OpenCode's auth.json) per test.
// node:test; also runs under `bun test`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawn, spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import api from '../api.cjs'
import { startMockQwen } from './support/mock-qwen.mjs'
import { cleanupsAfterEach, removeTempDir } from './support/helpers.mjs'

const require = createRequire(import.meta.url)
const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const CLI = path.join(ROOT, 'cli.cjs')
const { localTime } = require('../cli.cjs')
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
const API_KEY = 'sk-sp-test-cli-key-0123456789'
const CHAT = '/v1/chat/completions'

const cleanups = cleanupsAfterEach()

async function setup(config = {}) {
  const mock = await startMockQwen({ config: { apiKeys: [API_KEY], ...config } })
  cleanups.push(() => mock.close())
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-cli-'))
  cleanups.push(() => removeTempDir(tmp))
  const qwenHome = path.join(tmp, 'qwen-home')
  const dataHome = path.join(tmp, 'data')
  const env = {
    ...process.env,
    XDG_DATA_HOME: dataHome,
    QWEN_OAUTH_NO_BROWSER: '1',
    // Nothing of the real user's environment may leak into the command.
    QWEN_HOME: '',
    QWEN_OAUTH_BASE_URL: '',
    OPENCODE_AUTH_CONTENT: '',
    QWEN_OAUTH_DEBUG: '',
  }
  const common = ['--qwen-home', qwenHome, '--oauth-base-url', mock.url]
  return { mock, tmp, qwenHome, dataHome, env, common, credsPath: path.join(qwenHome, 'oauth_creds.json') }
}

/** Run the command to its end; stdin, stdout and stderr are pipes (not a TTY). */
function run(args, env, { onStdout } = {}) {
  const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] })
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => {
    stdout += d
    onStdout?.(stdout, child)
  })
  child.stderr.on('data', (d) => (stderr += d))
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })))
}

function writeCreds(file, creds) {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
  fs.writeFileSync(file, JSON.stringify(creds, null, 2), { mode: 0o600 })
}

function writeAuthJson(dataHome, content) {
  const file = path.join(dataHome, 'opencode', 'auth.json')
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(file, JSON.stringify(content, null, 2), { mode: 0o600 })
  return file
}

const mode = (file) => fs.statSync(file).mode & 0o777

// ─── usage ────────────────────────────────────────────────────────────────────────────────────────

test('--help and --version exit 0; usage errors exit 2 and say what is wrong', async () => {
  const env = { ...process.env }
  const help = await run(['--help'], env)
  assert.equal(help.code, 0)
  for (const word of ['login', 'status', 'logout', '--qwen-home', '--oauth-base-url', '--shared']) {
    assert.ok(help.stdout.includes(word), `help mentions ${word}`)
  }
  const version = await run(['--version'], env)
  assert.equal(version.code, 0)
  assert.equal(version.stdout.trim(), pkg.version)

  const cases = [
    [[], /no command given/],
    [['frobnicate'], /unknown command "frobnicate"/],
    [['status', '--shared'], /--shared is an option of logout/],
    [['login', '--qwen-home'], /--qwen-home needs a value/],
    [['status', '--bogus'], /unknown option --bogus/],
    [['status', 'extra'], /unexpected argument "extra"/],
  ]
  for (const [args, message] of cases) {
    const r = await run(args, env)
    assert.equal(r.code, 2, `exit code for ${args.join(' ')}`)
    assert.match(r.stderr, message)
  }
})

test('package.json: the bin is cli.cjs and it is published', () => {
  assert.deepEqual(pkg.bin, { 'opencode-qwen-oauth': 'cli.cjs' })
  assert.ok(pkg.files.includes('cli.cjs'))
  assert.ok(fs.readFileSync(CLI, 'utf8').startsWith('#!/usr/bin/env node\n'))
})

// ─── login ────────────────────────────────────────────────────────────────────────────────────────

test('login (stdout not a TTY): prints the link and the code once, saves the credentials, exit 0', async () => {
  const { mock, env, common, credsPath } = await setup({ pendingPolls: 1 })
  const r = await run(['login', ...common], env)
  assert.equal(r.code, 0, r.stderr)
  const link = r.stdout.match(/(http:\/\/127\.0\.0\.1:\d+\/authorize\?user_code=([A-Z]{4}-[A-Z]{4})&client=qwen-code)/)
  assert.ok(link, `the verification link is printed: ${r.stdout}`)
  assert.ok(r.stdout.includes(`the code ${link[2]}`), 'the code is printed on its own')
  assert.ok(r.stdout.includes(`${mock.url}/authorize`), 'the verification URI without the code too')
  assert.match(r.stdout, /Waiting for approval; the code expires in 10 min, at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/)
  assert.ok(!r.stdout.includes('\x1b['), 'no terminal control sequences on a pipe')
  assert.ok(r.stdout.includes(`Credentials saved to ${credsPath}`), 'says where')
  assert.match(r.stdout, /Note: Qwen ended the free OAuth tier on 2026-04-15; .*\nAn API key works: `opencode auth login`/)
  assert.equal(mock.deviceGrants, 1)

  const saved = JSON.parse(fs.readFileSync(credsPath, 'utf8'))
  assert.ok(mock.isValidAccessToken(saved.access_token), 'the saved token is the one the mock issued')
  if (process.platform !== 'win32') assert.equal(mode(credsPath), 0o600)
  assert.ok(!r.stdout.includes(saved.access_token) && !r.stderr.includes(saved.access_token), 'no access token printed')
  assert.ok(!r.stdout.includes(saved.refresh_token) && !r.stderr.includes(saved.refresh_token), 'no refresh token printed')
})

test('login denied in the browser: exit 1 with E_OAUTH_DENIED, nothing saved', async () => {
  const { env, common, credsPath } = await setup({ deviceOutcome: 'deny' })
  const r = await run(['login', ...common], env)
  assert.equal(r.code, 1)
  assert.match(r.stderr, /error \[E_OAUTH_DENIED\]: /)
  assert.ok(!fs.existsSync(credsPath))
})

test('login: Ctrl-C (SIGINT) cancels the polling cleanly, exit 130, nothing saved', { skip: process.platform === 'win32' }, async () => {
  const { mock, env, common, credsPath } = await setup({ autoApprove: false })
  let sent = false
  const r = await run(['login', ...common], env, {
    onStdout: (out, child) => {
      // Once it waits for approval, and the mock has seen a first poll.
      if (!sent && out.includes('Waiting for approval')) {
        sent = true
        mock.waitForRequests('/api/v1/oauth2/token', 1).then(() => child.kill('SIGINT'))
      }
    },
  })
  assert.ok(sent)
  assert.equal(r.code, 130, r.stderr)
  assert.match(r.stderr, /Login cancelled; nothing was saved/)
  assert.ok(!fs.existsSync(credsPath))
})

const hasScript = process.platform === 'linux' && spawnSync('script', ['--version']).status === 0

test('login on a TTY (script -qfc): one line with a live countdown, rewritten in place', { skip: !hasScript }, async () => {
  const { env, common, credsPath } = await setup({ pendingPolls: 1 })
  const quote = (s) => `'${s.replace(/'/g, `'\\''`)}'`
  const cmd = [process.execPath, CLI, 'login', ...common].map(quote).join(' ')
  const r = await new Promise((resolve) => {
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    cleanups.push(() => child.exitCode === null && child.kill('SIGKILL'))
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.on('close', (code) => resolve({ code, out }))
  })
  assert.equal(r.code, 0, r.out)
  assert.match(r.out, /\r\x1b\[2KWaiting for approval… the code expires in (9:5\d|10:00) \(Ctrl-C cancels\)/)
  assert.ok(fs.existsSync(credsPath))
})

// ─── status ───────────────────────────────────────────────────────────────────────────────────────

test('status: API base, expiry (relative and absolute), file and mode, OpenCode entry, quota view; never a token', async () => {
  const { mock, env, common, credsPath, qwenHome, dataHome } = await setup()
  const creds = mock.issueTokens({ expiresInSec: 3 * 3600 })
  writeCreds(credsPath, creds)
  writeAuthJson(dataHome, { 'qwen-code': { type: 'api', key: API_KEY, metadata: { endpoint: `${mock.url}/v1` } } })
  // Two requests and a 429 today, through the JS API on the same QWEN_HOME.
  const client = api.createClient({ qwenHome, minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0, maxRetries: 0 }, { apiKey: API_KEY })
  mock.enqueue429({ retryAfter: 30 })
  for (let i = 0; i < 2; i++) {
    const res = await client.fetch(`${mock.url}${CHAT}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
    await res.arrayBuffer()
  }
  // Counted in memory, written by a background writer moments later: now, before the status child reads.
  api.flushQuota()

  const r = await run(['status', ...common], env)
  assert.equal(r.code, 0, r.stderr)
  const out = r.stdout
  assert.match(out, /Qwen OAuth login: logged in/)
  const apiBase = api.apiBaseUrl(creds.resource_url)
  assert.ok(out.includes(`API base     ${apiBase} (resource_url ${creds.resource_url})`), out)
  assert.match(out, /token {8}valid, expires in (2 h 59 min|3 h)/)
  assert.ok(out.includes(`(${localTime(creds.expiry_date)})`), 'the absolute expiry time')
  assert.ok(out.includes(`file         ${credsPath}`))
  if (process.platform !== 'win32') assert.ok(out.includes('(mode 0600)'))
  assert.match(out, /refresh token present/)
  assert.ok(!out.includes('free OAuth tier'), 'no note on the OAuth service when OpenCode uses an API key')
  assert.match(out, new RegExp(`OpenCode: "qwen-code" entry \\(API key for ${mock.url.replace(/[.]/g, '\\.')}/v1\\)`))
  assert.match(out, /this minute {2}\d+/)
  assert.match(out, /today {8}2 of 1000 \(0 %\); resets at 00:00 Beijing time, in /)
  assert.match(out, /last 429 {5}rate limit, .* ago .*; the server asked to wait 30 s/)
  for (const secret of [creds.access_token, creds.refresh_token, API_KEY]) {
    assert.ok(!out.includes(secret) && !r.stderr.includes(secret), 'no token or key in the output')
  }

  const j = await run(['status', '--json', ...common], env)
  assert.equal(j.code, 0, j.stderr)
  for (const secret of [creds.access_token, creds.refresh_token, API_KEY]) assert.ok(!j.stdout.includes(secret), 'no secret in JSON')
  const report = JSON.parse(j.stdout)
  assert.equal(report.loggedIn, true)
  assert.equal(report.credentials.apiBaseUrl, apiBase)
  assert.equal(report.credentials.expiryDate, creds.expiry_date)
  assert.equal(report.credentials.valid, true)
  assert.match(report.credentials.accessTokenSha256, /^[0-9a-f]{12}$/)
  assert.equal(report.opencode.entry.type, 'api')
  assert.equal(report.quota.today, 2)
  assert.equal(report.quota.last429.reason, 'rate_limit')
})

test('status: logged out, an expired token, and an unusable file (exit 1 with its code)', async () => {
  const { mock, env, common, credsPath } = await setup()
  let r = await run(['status', ...common], env)
  assert.equal(r.code, 0)
  assert.ok(r.stdout.includes(`not logged in (no ${credsPath})`))
  assert.match(r.stdout, /OpenCode: no "qwen-code" entry/)
  assert.match(r.stdout, /today {8}0 of 1000/)
  assert.ok(!fs.existsSync(path.dirname(credsPath)), 'status creates nothing')

  writeCreds(credsPath, mock.issueTokens({ expiresInSec: -120 }))
  r = await run(['status', ...common], env)
  assert.equal(r.code, 0)
  assert.match(r.stdout, /token {8}expired, expired 2 min ago/)
  if (process.platform !== 'win32') {
    assert.ok(r.stdout.includes(`file         ${credsPath} (mode 0600)\n`), 'a private file gets no warning')
    fs.chmodSync(credsPath, 0o644)
    const open = await run(['status', ...common], env)
    assert.ok(open.stdout.includes(`(mode 0644: other users have access to your tokens; run chmod 600 ${credsPath})`), open.stdout)
    fs.chmodSync(credsPath, 0o600)
  }
  // No API key in OpenCode: the login shown is what it would use, so the service's refusal is said next to it.
  assert.match(r.stdout, /service {6}Qwen ended the free OAuth tier on 2026-04-15/)
  assert.match(r.stdout, /opencode auth login` → Qwen Code → Qwen API key/)

  fs.writeFileSync(credsPath, '{"access_token": 1}')
  r = await run(['status', ...common], env)
  assert.equal(r.code, 1)
  assert.match(r.stdout, /Qwen OAuth login: unusable \[E_CREDS_INVALID\]/)
})

// ─── logout ───────────────────────────────────────────────────────────────────────────────────────

test('logout removes only our entry from OpenCode (atomically, 0600, other providers kept); --shared also the file', async () => {
  const { mock, env, common, credsPath, dataHome } = await setup()
  const creds = mock.issueTokens()
  writeCreds(credsPath, creds)
  const other = { type: 'api', key: 'sk-other-provider-key' }
  const authFile = writeAuthJson(dataHome, {
    anthropic: other,
    'qwen-code': { type: 'oauth', access: creds.access_token, refresh: creds.refresh_token, expires: creds.expiry_date },
  })

  let r = await run(['logout', ...common], env)
  assert.equal(r.code, 0, r.stderr)
  assert.ok(r.stdout.includes(`Removed the "qwen-code" entry (Qwen OAuth) from ${authFile}`))
  assert.deepEqual(JSON.parse(fs.readFileSync(authFile, 'utf8')), { anthropic: other })
  if (process.platform !== 'win32') assert.equal(mode(authFile), 0o600)
  assert.deepEqual(fs.readdirSync(path.dirname(authFile)), ['auth.json'], 'no temp file left')
  assert.ok(fs.existsSync(credsPath), 'the shared login is kept without --shared')
  assert.match(r.stdout, /Kept the shared login .*logout --shared/)
  assert.ok(!r.stdout.includes(creds.access_token) && !r.stdout.includes(creds.refresh_token))

  r = await run(['logout', '--shared', ...common], env)
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /OpenCode has no "qwen-code" entry/)
  assert.ok(r.stdout.includes(`Deleted ${credsPath}`))
  assert.ok(!fs.existsSync(credsPath))
  assert.ok(!fs.existsSync(path.join(path.dirname(credsPath), 'oauth_creds.lock')), 'the lock was released')
  assert.deepEqual(JSON.parse(fs.readFileSync(authFile, 'utf8')), { anthropic: other })

  r = await run(['logout', '--all', ...common], env)
  assert.equal(r.code, 0)
  assert.match(r.stdout, /There was no /)
})

test('logout: without OpenCode installed it still works; a broken auth.json is left alone (exit 1)', async () => {
  const { mock, env, common, credsPath, dataHome } = await setup()
  writeCreds(credsPath, mock.issueTokens())
  let r = await run(['logout', '--shared', ...common], env)
  assert.equal(r.code, 0, r.stderr)
  assert.ok(!fs.existsSync(path.join(dataHome, 'opencode')), 'no OpenCode directory is created')
  assert.ok(!fs.existsSync(credsPath))

  const authFile = path.join(dataHome, 'opencode', 'auth.json')
  fs.mkdirSync(path.dirname(authFile), { recursive: true })
  fs.writeFileSync(authFile, '{"qwen-code": {', { mode: 0o600 })
  r = await run(['logout', ...common], env)
  assert.equal(r.code, 1)
  assert.match(r.stderr, /error \[E_IO\]: .*auth\.json is not valid JSON; left as it is/)
  assert.equal(fs.readFileSync(authFile, 'utf8'), '{"qwen-code": {')
})
