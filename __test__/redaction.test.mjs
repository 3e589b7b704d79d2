// Token safety with real processes: (1) every scenario we can run cheaply (login, refresh, forced refresh,
// chat with 401/quota/429/stream, API key, refused refresh, OAuth errors echoing the token, broken files,
// untrusted hosts, network errors, a crash) runs with the debug log on, and its stdout, stderr, error
// messages and util.inspect() of thrown objects contain none of the tokens, refresh tokens, device codes,
// verifiers or keys involved; (2) a `resource_url` (from the file or from the server) or an OAuth base URL
// pointing anywhere but a trusted host is refused with E_UNTRUSTED_HOST before any byte leaves: every child
// runs behind a recording HTTP(S) proxy on 127.0.0.1 (NO_PROXY for the mock), so a request to another host
// would be caught there instead of going out; (3) the plugin opens the browser with the URL as one argument
// (a fake xdg-open records its argv), never through a shell. node:test.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startMockQwen } from './support/mock-qwen.mjs'
import { spawnScript } from './support/children.mjs'
import { DEVICE_KEYS, cleanupsAfterEach, removeTempDir, until } from './support/helpers.mjs'

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'support', 'safety-child.mjs')
const TOKEN_PATH = '/api/v1/oauth2/token'
const API_KEY = 'sk-test-0123456789abcdef0123456789abcdef'

const cleanups = cleanupsAfterEach()

// Everything every child printed, for the final scan; and the secrets of every mock.
const transcripts = []
const secretSources = []

/** A proxy that records every connection and forwards nothing. */
let proxy
before(async () => {
  const seen = []
  const server = net.createServer((socket) => {
    const entry = { first: '' }
    seen.push(entry)
    socket.once('data', (d) => {
      entry.first = d.toString('latin1').split('\r\n')[0]
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
    })
    socket.on('error', () => {})
  })
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  proxy = { url: `http://127.0.0.1:${server.address().port}`, seen, close: () => new Promise((r) => server.close(r)) }
})
after(() => proxy.close())

async function mockServer(config = {}) {
  const mock = await startMockQwen({ config })
  cleanups.push(() => mock.close())
  secretSources.push(mock)
  return mock
}

function home(tag) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `qwen-safety-${tag}-`))
  cleanups.push(() => removeTempDir(d))
  return d
}

function writeCreds(dir, creds) {
  const o = {}
  for (const k of DEVICE_KEYS) o[k] = creds[k]
  fs.writeFileSync(path.join(dir, 'oauth_creds.json'), JSON.stringify(o, null, 2), { mode: 0o600 })
}

/** Run the steps in a child with the debug log on, behind the recording proxy; returns one result per step. */
async function run(steps, env) {
  const c = spawnScript(CHILD, [JSON.stringify(steps)], {
    QWEN_OAUTH_DEBUG: '1',
    QWEN_PACING_INTERVAL_MS: '0',
    QWEN_PACING_JITTER_MIN_MS: '0',
    QWEN_PACING_JITTER_MAX_MS: '0',
    QWEN_MAX_RETRIES: '0',
    HTTPS_PROXY: proxy.url,
    HTTP_PROXY: proxy.url,
    ALL_PROXY: proxy.url,
    https_proxy: proxy.url,
    http_proxy: proxy.url,
    NO_PROXY: '127.0.0.1,localhost',
    no_proxy: '127.0.0.1,localhost',
    QWEN_OAUTH_NO_BROWSER: '1',
    ...env,
  })
  cleanups.push(() => c.close())
  let stdout = ''
  c.proc.stdout.on('data', (d) => (stdout += d))
  const results = []
  for (let i = 0; i < steps.length; i++) results.push(JSON.parse(await c.nextLine(60_000)))
  const exit = await c.exited
  transcripts.push({ steps: steps.map((s) => s.op).join(','), stdout, stderr: c.stderr(), exit })
  return { results, stderr: c.stderr(), exit }
}

const chatUrl = (mock) => `${mock.url}/v1/chat/completions`

// ─── scenarios (each also feeds the redaction scan at the end) ─────────────────────────────────────

test('login, refresh, forced refresh, chat with 401 → refresh, token refused, quota, 429, stream, API key', async () => {
  const mock = await mockServer({ apiKeys: [API_KEY] })
  mock.config.resourceUrl = mock.url // the plugin derives its API base from it: plain http on loopback
  const dir = home('happy')
  mock.enqueue401() // → forced refresh, retried
  mock.enqueue({ status: 200, body: { ok: true } })
  mock.enqueue401() // → forced refresh, still refused → E_TOKEN_REFUSED
  mock.enqueue401()
  mock.enqueueQuota()
  mock.enqueue429({ retryAfter: 1 })
  const { results, stderr } = await run(
    [
      { op: 'login' },
      { op: 'load' },
      { op: 'get' },
      { op: 'get', force: true },
      { op: 'fetch', url: chatUrl(mock) },
      { op: 'fetch', url: chatUrl(mock) },
      { op: 'fetch', url: chatUrl(mock) },
      { op: 'fetch', url: chatUrl(mock) },
      { op: 'fetch', url: chatUrl(mock), stream: true },
      { op: 'fetch', url: chatUrl(mock), apiKey: API_KEY },
      { op: 'plugin-fetch', path: '/chat/completions' },
    ],
    { QWEN_HOME: dir, QWEN_OAUTH_BASE_URL: mock.url },
  )
  const summary = results.map((r) => (r.ok ? r.status ?? 'ok' : r.code))
  assert.deepEqual(summary, ['ok', 'ok', 'ok', 'ok', 200, 'E_TOKEN_REFUSED', 'E_QUOTA_EXHAUSTED', 429, 200, 200, 200])
  assert.ok(mock.refreshGrants >= 3)
  assert.match(stderr, /\[opencode-qwen-oauth\] /, 'the debug log was on')
})

test('refused refresh, OAuth errors that echo the token, a 500, broken files, an unreachable server, a crash', async () => {
  const mock = await mockServer()
  const dir = home('errors')
  const seed = mock.issueTokens({ expiresInSec: -60 })
  writeCreds(dir, seed)
  mock.enqueueToken({ status: 200, body: { error: 'invalid_request', error_description: `refresh_token ${seed.refresh_token} is malformed` } })
  mock.enqueueToken({ status: 500, body: `upstream failed for ${seed.refresh_token}` })
  const first = await run([{ op: 'get' }, { op: 'get' }], { QWEN_HOME: dir, QWEN_OAUTH_BASE_URL: mock.url })
  assert.deepEqual(first.results.map((r) => r.code), ['E_OAUTH_FAILED', 'E_BAD_RESPONSE'])

  mock.revokeRefreshToken(seed.refresh_token)
  const refused = await run([{ op: 'get' }, { op: 'crash' }], { QWEN_HOME: dir, QWEN_OAUTH_BASE_URL: mock.url })
  assert.equal(refused.results[0].code, 'E_REFRESH_REJECTED')
  assert.equal(refused.exit.code, 1, 'the unhandled rejection ends the process')
  assert.match(refused.stderr, /E_REFRESH_REJECTED/, "Node's crash report is in the transcript")

  // Files cut inside a token, or with a token where a number belongs.
  const text = fs.readFileSync(path.join(dir, 'oauth_creds.json'), 'utf8')
  for (const broken of [
    text.slice(0, text.indexOf(seed.refresh_token) + 10),
    text.replace(String(seed.expiry_date), JSON.stringify(seed.access_token)),
    text.replace('"access_token"', '"access_tokens"'),
  ]) {
    fs.writeFileSync(path.join(dir, 'oauth_creds.json'), broken)
    const r = await run([{ op: 'load' }, { op: 'get' }], { QWEN_HOME: dir, QWEN_OAUTH_BASE_URL: mock.url })
    assert.deepEqual(r.results.map((x) => x.code), ['E_CREDS_INVALID', 'E_CREDS_INVALID'])
  }

  writeCreds(dir, mock.issueTokens({ expiresInSec: -60 }))
  const dead = await startMockQwen()
  const deadUrl = dead.url
  await dead.close()
  const net = await run([{ op: 'get' }], { QWEN_HOME: dir, QWEN_OAUTH_BASE_URL: deadUrl })
  assert.equal(net.results[0].code, 'E_NETWORK')
})

// ─── untrusted hosts ───────────────────────────────────────────────────────────────────────────────

// Node's own fetch (undici) ignores HTTPS_PROXY, so with the runtime transport under Node there is no proxy to catch it.
const undiciTransport = process.env.QWEN_FETCH_TRANSPORT === 'runtime' && typeof Bun === 'undefined'
test('control: behind the recording proxy, a request to a host the user trusts is caught there, not sent out', { skip: undiciTransport && 'undici ignores HTTPS_PROXY' }, async () => {
  const mock = await mockServer()
  const dir = home('control')
  writeCreds(dir, mock.issueTokens())
  const before = proxy.seen.length
  const { results } = await run([{ op: 'fetch', url: 'https://evil.example.com/v1/chat/completions' }], {
    QWEN_HOME: dir,
    QWEN_OAUTH_BASE_URL: mock.url,
    QWEN_TRUSTED_HOSTS: 'evil.example.com',
  })
  assert.equal(results[0].code, 'E_NETWORK')
  const caught = proxy.seen.slice(before)
  assert.equal(caught.length, 1)
  assert.match(caught[0].first, /^CONNECT evil\.example\.com:443 /)
})

test('a resource_url or OAuth server pointing elsewhere: E_UNTRUSTED_HOST, and no request leaves', async () => {
  const mock = await mockServer()
  const proxied = proxy.seen.length
  const chatsBefore = () => mock.requestsTo('/v1/chat/completions').length

  // From the file: the plugin derives its base URL from resource_url.
  for (const resourceUrl of [
    'evil.example.com',
    'https://evil.example.com',
    'http://portal.qwen.ai',
    'portal.qwen.ai.evil.example.com',
    'portal.qwen.ai@evil.example.com',
    'evil.example.com/portal.qwen.ai',
    'evil.example.com#.qwen.ai',
    'evil.example.com\\@portal.qwen.ai',
  ]) {
    const dir = home('resource')
    writeCreds(dir, { ...mock.issueTokens(), resource_url: resourceUrl })
    const { results } = await run([{ op: 'get' }, { op: 'plugin-fetch', path: '/chat/completions' }], {
      QWEN_HOME: dir,
      QWEN_OAUTH_BASE_URL: mock.url,
    })
    assert.ok(results[0].ok)
    assert.equal(results[1].code, 'E_UNTRUSTED_HOST', `${resourceUrl}: ${results[1].message}`)
    assert.match(results[1].message, /trustedHosts/)
  }

  // From the server: a refresh answer moves the API to another host; the next request is refused.
  const dir = home('server')
  writeCreds(dir, mock.issueTokens({ expiresInSec: -60 }))
  mock.config.resourceUrl = 'evil.example.com'
  const fromServer = await run(
    [{ op: 'plugin-fetch', path: '/chat/completions' }, { op: 'get' }, { op: 'plugin-fetch', path: '/chat/completions' }, { op: 'fetch', url: 'https://evil.example.com/v1/chat/completions' }],
    { QWEN_HOME: dir, QWEN_OAUTH_BASE_URL: mock.url },
  )
  mock.config.resourceUrl = null
  assert.equal(mock.refreshGrants, 1)
  assert.equal(fromServer.results[1].apiBaseUrl, 'https://evil.example.com/v1')
  assert.equal(fromServer.results[2].code, 'E_UNTRUSTED_HOST')
  assert.equal(fromServer.results[3].code, 'E_UNTRUSTED_HOST')

  // An OAuth server that is not trusted never gets the refresh token.
  const oauthDir = home('oauth')
  const seed = mock.issueTokens({ expiresInSec: -60 })
  writeCreds(oauthDir, seed)
  for (const base of ['https://evil.example.com', 'http://chat.qwen.ai']) {
    const { results } = await run([{ op: 'get' }], { QWEN_HOME: oauthDir, QWEN_OAUTH_BASE_URL: base })
    assert.equal(results[0].code, 'E_UNTRUSTED_HOST', results[0].message)
    assert.ok(results[0].message.includes(`${base}${TOKEN_PATH}`))
  }

  assert.deepEqual(proxy.seen.slice(proxied), [], 'a request went to a non-loopback host')
  assert.ok(chatsBefore() <= 1, 'only the first request, before the move, reached the API')
})

// ─── browser ───────────────────────────────────────────────────────────────────────────────────────

/** A child that may open a browser: a display, and `bin` (holding a fake xdg-open that writes its argv to `argvFile`) first on PATH. */
const browserEnv = (qwenHome, mock, bin, argvFile) => ({
  QWEN_HOME: qwenHome,
  QWEN_OAUTH_BASE_URL: mock.url,
  QWEN_OAUTH_NO_BROWSER: '',
  DISPLAY: ':99',
  PATH: `${bin}:${process.env.PATH}`,
  XDG_OPEN_ARGV: argvFile,
  OPENCODE_AUTH_CONTENT: '{"qwen-code":{"type":"oauth"}}',
})

test('the plugin opens the browser with the URL as one argument, never through a shell', async (t) => {
  if (process.platform !== 'linux') return t.skip('xdg-open path is Linux-only')
  const mock = await mockServer()
  const dir = home('browser')
  const bin = home('bin')
  const argvFile = path.join(bin, 'argv')
  fs.writeFileSync(
    path.join(bin, 'xdg-open'),
    '#!/bin/sh\nprintf \'%s\\0\' "$@" > "$XDG_OPEN_ARGV.tmp" && mv "$XDG_OPEN_ARGV.tmp" "$XDG_OPEN_ARGV"\n',
    { mode: 0o755 },
  )
  const marker = (n) => path.join(bin, `pwned-${n}`)
  const url =
    `${mock.url}/authorize?user_code=ABCD-EFGH&a=$(touch ${marker(1)})&b=;touch ${marker(2)};` +
    `&c=\`touch ${marker(3)}\`&d=|touch ${marker(4)}&e='"&f=%20 x`
  mock.enqueueDeviceCode({
    body: { device_code: 'mock-device-browser-test-0001', user_code: 'ABCD-EFGH', verification_uri: `${mock.url}/authorize`, verification_uri_complete: url, expires_in: 600 },
  })
  const { results } = await run([{ op: 'authorize' }], browserEnv(dir, mock, bin, argvFile))
  assert.ok(results[0].ok, results[0].message)
  assert.equal(results[0].url, url)
  await until(() => fs.existsSync(argvFile), 'xdg-open to be started', 10_000)
  const argv = fs.readFileSync(argvFile, 'utf8').split('\0').slice(0, -1)
  assert.deepEqual(argv, [url])
  for (let n = 1; n <= 4; n++) assert.ok(!fs.existsSync(marker(n)), `shell text in the URL was run (${n})`)
})

test('a verification link that is not http(s) (file:, an option) is shown but never handed to the opener', async (t) => {
  if (process.platform !== 'linux') return t.skip('xdg-open path is Linux-only')
  const mock = await mockServer()
  const bin = home('bin')
  const argvFile = path.join(bin, 'argv')
  fs.writeFileSync(path.join(bin, 'xdg-open'), '#!/bin/sh\nprintf \'%s\\0\' "$@" > "$XDG_OPEN_ARGV"\n', { mode: 0o755 })
  for (const link of ['file:///etc/passwd', '--version', 'javascript:alert(1)']) {
    mock.enqueueDeviceCode({
      body: { device_code: 'mock-device-browser-test-0002', user_code: 'ABCD-EFGH', verification_uri: link, verification_uri_complete: link, expires_in: 600 },
    })
    const { results, stderr } = await run([{ op: 'authorize' }], browserEnv(home('browser'), mock, bin, argvFile))
    assert.ok(results[0].ok, results[0].message)
    assert.equal(results[0].url, link, 'the link is still shown to the user')
    assert.match(stderr, /not opening a browser: the verification link is not an http\(s\) URL/)
    assert.ok(!fs.existsSync(argvFile), `${link} was handed to xdg-open`)
  }
})

// ─── the scan ──────────────────────────────────────────────────────────────────────────────────────

test('no token, refresh token, device code, verifier or API key appears in any output of the scenarios above', () => {
  const secrets = new Set([API_KEY])
  for (const mock of secretSources) {
    for (const p of mock.tokens) {
      secrets.add(p.access_token)
      secrets.add(p.refresh_token)
    }
    for (const r of mock.requests) {
      if (r.path !== TOKEN_PATH) continue
      const form = new URLSearchParams(r.rawBody)
      for (const k of ['device_code', 'code_verifier', 'refresh_token']) if (form.get(k)) secrets.add(form.get(k))
    }
  }
  for (const s of secrets) assert.ok(s.length >= 16)
  assert.ok(transcripts.length >= 10, `only ${transcripts.length} transcripts`)
  assert.ok(secrets.size >= 20, `only ${secrets.size} secrets collected`)
  let leaks = 0
  const where = []
  for (const t of transcripts) {
    for (const [stream, text] of [['stdout', t.stdout], ['stderr', t.stderr]]) {
      for (const s of secrets) {
        if (text.includes(s)) {
          leaks++
          where.push(`${t.steps} ${stream}`)
        }
      }
    }
  }
  assert.equal(leaks, 0, `tokens leaked in: ${[...new Set(where)].join('; ')}`)
})
