// Device login (RFC 8628 + PKCE S256) through the JS API against the mock Qwen server: the wire format
// byte for byte, the CLI's polling pace, every way the flow ends, and the saved credentials file.
// node:test; also runs under `bun test`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import api from '../api.cjs'
import { startMockQwen, CLIENT_ID, DEVICE_GRANT } from './support/mock-qwen.mjs'
import { DEVICE_KEYS, cleanupsAfterEach } from './support/helpers.mjs'

const DEVICE_PATH = '/api/v1/oauth2/device/code'
const TOKEN_PATH = '/api/v1/oauth2/token'
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
const B64URL_43 = /^[A-Za-z0-9_-]{43}$/
// Bun's default per-test timeout is 5 s; the CLI's polling pace makes some tests slower.
const SLOW = { timeout: 30_000 }
const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)))

const cleanups = cleanupsAfterEach()

async function setup(config = {}) {
  const mock = await startMockQwen({ config })
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-login-'))
  cleanups.push(() => fs.rmSync(tmp, { recursive: true, force: true }))
  cleanups.push(() => mock.close())
  // A directory that does not exist yet: the login must create it (0700).
  const qwenHome = path.join(tmp, 'qwen-home')
  return { mock, qwenHome, credsPath: path.join(qwenHome, 'oauth_creds.json') }
}

/** Rejection of `p` as an Error, failing the test if it resolves. */
async function rejection(p) {
  try {
    await p
  } catch (err) {
    return err
  }
  assert.fail('expected the login to fail')
}

/** The form fields of a recorded request, in the order they were sent. */
const fields = (rec) => [...new URLSearchParams(rec.rawBody)]

/** Every secret the mock saw or handed out in this test: device codes, verifiers, tokens. */
function secretsOf(mock) {
  const s = []
  for (const r of mock.requestsTo(TOKEN_PATH)) {
    const f = new URLSearchParams(r.rawBody)
    for (const k of ['device_code', 'code_verifier', 'refresh_token']) if (f.get(k)) s.push(f.get(k))
  }
  for (const t of mock.tokens) s.push(t.access_token, t.refresh_token)
  return s
}

const gaps = (recs) => recs.slice(1).map((r, i) => r.hr - recs[i].hr)

test('happy path: wait() resolves with the credentials, saved 0600 in a 0700 dir in device-flow key order', async () => {
  const { mock, qwenHome, credsPath } = await setup({ resourceUrl: 'portal.qwen.ai' })
  const login = await api.startLogin({ qwenHome, oauthBaseUrl: mock.url })
  assert.match(login.userCode, /^[A-Z]{4}-[A-Z]{4}$/)
  assert.equal(login.verificationUri, `${mock.url}/authorize`)
  assert.equal(login.verificationUriComplete, `${mock.url}/authorize?user_code=${login.userCode}&client=qwen-code`)
  assert.equal(login.expiresIn, 600)
  assert.equal(fs.existsSync(credsPath), false, 'nothing is written before approval')

  const before = Date.now()
  const creds = await login.wait()
  const after = Date.now()

  assert.equal(mock.deviceGrants, 1)
  const issued = mock.tokens.find((t) => t.via === 'device')
  assert.ok(creds.accessToken === issued.access_token, 'access token is the one the server issued')
  assert.ok(creds.refreshToken === issued.refresh_token, 'refresh token is the one the server issued')
  assert.equal(creds.tokenType, 'Bearer')
  assert.equal(creds.resourceUrl, 'portal.qwen.ai')
  assert.equal(creds.apiBaseUrl, 'https://portal.qwen.ai/v1')
  assert.ok(creds.expiryDate >= before + 3600_000 && creds.expiryDate <= after + 3600_000)

  if (process.platform !== 'win32') {
    assert.equal(fs.statSync(qwenHome).mode & 0o777, 0o700)
    assert.equal(fs.statSync(credsPath).mode & 0o777, 0o600)
  }
  const text = fs.readFileSync(credsPath, 'utf8')
  const saved = JSON.parse(text)
  assert.deepEqual(Object.keys(saved), DEVICE_KEYS)
  // Exactly what the CLI's JSON.stringify(creds, null, 2) writes: 2-space indent, no trailing newline.
  assert.ok(text === JSON.stringify(saved, null, 2), 'file is JSON.stringify(creds, null, 2)')
  assert.ok(saved.access_token === issued.access_token && saved.refresh_token === issued.refresh_token)
  assert.equal(saved.token_type, 'Bearer')
  assert.equal(saved.resource_url, 'portal.qwen.ai')
  assert.equal(saved.expiry_date, creds.expiryDate)
  assert.deepEqual(
    fs.readdirSync(qwenHome).filter((n) => n.startsWith('oauth_creds.json')),
    ['oauth_creds.json'],
    'no temp file left behind',
  )

  // The same credentials are what the API now hands out.
  const loaded = api.loadCredentials({ qwenHome })
  assert.ok(loaded.accessToken === issued.access_token)
})

test('wire format: device-code and poll bodies byte for byte, headers, x-request-id UUID v4, verifier matches challenge', async () => {
  const { mock, qwenHome } = await setup()
  const login = await api.startLogin({ qwenHome, oauthBaseUrl: mock.url })
  await login.wait()

  const [dc] = mock.requestsTo(DEVICE_PATH)
  assert.equal(dc.method, 'POST')
  assert.equal(dc.url, DEVICE_PATH)
  assert.equal(dc.headers['content-type'], 'application/x-www-form-urlencoded')
  assert.equal(dc.headers.accept, 'application/json')
  assert.match(dc.headers['x-request-id'], UUID_V4)
  const challenge = new URLSearchParams(dc.rawBody).get('code_challenge')
  assert.match(challenge, B64URL_43)
  assert.equal(
    dc.rawBody,
    `client_id=${CLIENT_ID}&scope=openid%20profile%20email%20model.completion&code_challenge=${challenge}&code_challenge_method=S256`,
  )

  const polls = mock.requestsTo(TOKEN_PATH)
  assert.equal(polls.length, 1)
  const [p] = polls
  assert.equal(p.headers['content-type'], 'application/x-www-form-urlencoded')
  assert.equal(p.headers.accept, 'application/json')
  assert.equal(p.headers['x-request-id'], undefined, 'only the device-code request carries x-request-id')
  const f = new URLSearchParams(p.rawBody)
  const deviceCode = f.get('device_code')
  const verifier = f.get('code_verifier')
  assert.match(verifier, B64URL_43)
  assert.ok(crypto.createHash('sha256').update(verifier).digest('base64url') === challenge, 'S256(verifier) = challenge')
  assert.deepEqual(
    fields(p).map(([k]) => k),
    ['grant_type', 'client_id', 'device_code', 'code_verifier'],
  )
  assert.ok(
    p.rawBody ===
      `grant_type=${encodeURIComponent(DEVICE_GRANT)}&client_id=${CLIENT_ID}` +
        `&device_code=${encodeURIComponent(deviceCode)}&code_verifier=${verifier}`,
    'poll body is the encodeURIComponent form in the CLI order',
  )
  assert.ok(p.rawBody.startsWith('grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&'))

  // A second login uses a fresh PKCE pair and a fresh request id.
  const again = await api.startLogin({ qwenHome, oauthBaseUrl: mock.url })
  again.cancel()
  const [, dc2] = mock.requestsTo(DEVICE_PATH)
  assert.notEqual(new URLSearchParams(dc2.rawBody).get('code_challenge'), challenge)
  assert.notEqual(dc2.headers['x-request-id'], dc.headers['x-request-id'])
})

test('pending: polls start at once and are at least 2000 ms apart, then approval completes', SLOW, async () => {
  const { mock, qwenHome, credsPath } = await setup({ pendingPolls: 2 })
  const login = await api.startLogin({ qwenHome, oauthBaseUrl: mock.url })
  await login.wait()
  const polls = mock.requestsTo(TOKEN_PATH)
  assert.equal(polls.length, 3)
  assert.deepEqual(polls.map((r) => r.status), [400, 400, 200])
  for (const g of gaps(polls)) assert.ok(g >= 2000, `poll gap ${g.toFixed(0)} ms must be >= 2000 ms`)
  assert.ok(fs.existsSync(credsPath))
})

test('slow_down (429) multiplies the interval by 1.5; a plain pending resets it to 2000 ms', SLOW, async () => {
  // poll 0: slow_down → 3000 ms; poll 1: slow_down → 4500 ms; poll 2: pending → 2000 ms; poll 3: approved.
  const { mock, qwenHome } = await setup({ slowDownPolls: [0, 1], pendingPolls: 1 })
  const login = await api.startLogin({ qwenHome, oauthBaseUrl: mock.url })
  await login.wait()
  const polls = mock.requestsTo(TOKEN_PATH)
  assert.deepEqual(polls.map((r) => r.status), [429, 429, 400, 200])
  const [g1, g2, g3] = gaps(polls)
  assert.ok(g1 >= 3000, `gap after one slow_down ${g1.toFixed(0)} ms must be >= 3000 ms`)
  assert.ok(g2 >= 4500, `gap after two slow_downs ${g2.toFixed(0)} ms must be >= 4500 ms`)
  assert.ok(g3 >= 2000, `gap after pending ${g3.toFixed(0)} ms must be >= 2000 ms`)
  // The reset is observable as a shorter gap than the slowed-down one before it.
  assert.ok(g3 < g2, 'pending resets the interval')
})

test('denied: access_denied ends the flow at once with E_OAUTH_DENIED and writes nothing', async () => {
  const { mock, qwenHome, credsPath } = await setup({ deviceOutcome: 'deny', pendingPolls: 1 })
  const login = await api.startLogin({ qwenHome, oauthBaseUrl: mock.url })
  const err = await rejection(login.wait())
  assert.equal(err.code, 'E_OAUTH_DENIED')
  assert.match(err.message, /denied/)
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 2, 'no poll after the denial')
  assert.equal(fs.existsSync(credsPath), false)
  for (const s of secretsOf(mock)) assert.ok(!err.message.includes(s), 'error message holds no secret')
})

test('expired: expired_token ends the flow at once with E_OAUTH_EXPIRED', async () => {
  const { mock, qwenHome, credsPath } = await setup({ deviceOutcome: 'expire' })
  const login = await api.startLogin({ qwenHome, oauthBaseUrl: mock.url })
  const err = await rejection(login.wait())
  assert.equal(err.code, 'E_OAUTH_EXPIRED')
  assert.match(err.message, /expired/)
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 1)
  assert.equal(fs.existsSync(credsPath), false)
  for (const s of secretsOf(mock)) assert.ok(!err.message.includes(s), 'error message holds no secret')
})

test('expired: the flow stops by itself once expires_in has passed, even if the server keeps saying pending', async () => {
  const { mock, qwenHome } = await setup({ deviceExpiresInSec: 3, autoApprove: false })
  // The server never says expired_token here: every poll gets "pending".
  for (let i = 0; i < 10; i++) mock.enqueueToken({ status: 400, body: { error: 'authorization_pending' } })
  const login = await api.startLogin({ qwenHome, oauthBaseUrl: mock.url })
  assert.equal(login.expiresIn, 3)
  const started = Date.now()
  const err = await rejection(login.wait())
  assert.equal(err.code, 'E_OAUTH_EXPIRED')
  // Attempt limit ceil(3 / 2) = 2 polls, at 0 s and 2 s.
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 2)
  assert.ok(Date.now() - started >= 2000)
})

test('cancel() during the wait between polls rejects with E_OAUTH_CANCELLED before the next poll', async () => {
  const { mock, qwenHome, credsPath } = await setup({ autoApprove: false })
  const login = await api.startLogin({ qwenHome, oauthBaseUrl: mock.url })
  const waiting = rejection(login.wait())
  await mock.waitForRequests(TOKEN_PATH, 1)
  login.cancel()
  const err = await waiting
  assert.equal(err.code, 'E_OAUTH_CANCELLED')
  // The next poll would have come 2 s after the first: a prompt cancel never lets it happen.
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 1)
  assert.equal(fs.existsSync(credsPath), false)
  // wait() again reports the same end without polling.
  assert.equal((await rejection(login.wait())).code, 'E_OAUTH_CANCELLED')
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 1)
})

test('cancel() during an in-flight poll rejects with E_OAUTH_CANCELLED and drops the connection', async () => {
  const { mock, qwenHome, credsPath } = await setup()
  // The first poll hangs for a minute; then the server would approve.
  mock.enqueueToken({ status: 400, body: { error: 'authorization_pending' }, delayMs: 60_000 })
  const login = await api.startLogin({ qwenHome, oauthBaseUrl: mock.url })
  const waiting = rejection(login.wait())
  await mock.waitForRequests(TOKEN_PATH, 1)
  login.cancel()
  const err = await waiting
  assert.equal(err.code, 'E_OAUTH_CANCELLED')
  const gone = await mock.waitForDisconnect()
  assert.equal(gone.path, TOKEN_PATH)
  assert.equal(mock.deviceGrants, 0)
  assert.equal(fs.existsSync(credsPath), false)
})

test('cancel() before wait() rejects at once without polling', async () => {
  const { mock, qwenHome } = await setup()
  const login = await api.startLogin({ qwenHome, oauthBaseUrl: mock.url })
  login.cancel()
  assert.equal((await rejection(login.wait())).code, 'E_OAUTH_CANCELLED')
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 0)
})

test('other OAuth errors end the flow with E_OAUTH_FAILED; server text that echoes secrets is masked', async () => {
  const { mock, qwenHome } = await setup({ autoApprove: false })
  const login = await api.startLogin({ qwenHome, oauthBaseUrl: mock.url })
  const waiting = rejection(login.wait())
  const [first] = await mock.waitForRequests(TOKEN_PATH, 1)
  const f = new URLSearchParams(first.rawBody)
  // The next poll gets an error whose description repeats the device code and the verifier.
  mock.enqueueToken({
    status: 400,
    body: {
      error: 'invalid_grant',
      error_description: `device_code ${f.get('device_code')} with verifier ${f.get('code_verifier')} is invalid`,
    },
  })
  const err = await waiting
  assert.equal(err.code, 'E_OAUTH_FAILED')
  assert.match(err.message, /invalid_grant/)
  assert.ok(err.message.includes(mock.url + TOKEN_PATH), 'names the endpoint')
  assert.ok(!err.message.includes(f.get('device_code')), 'no device code in the message')
  assert.ok(!err.message.includes(f.get('code_verifier')), 'no verifier in the message')
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 2)
})

test('odd token answers: 401 → E_OAUTH_EXPIRED, non-JSON 5xx → E_BAD_RESPONSE, missing expires_in → E_BAD_RESPONSE', async () => {
  const { mock, qwenHome, credsPath } = await setup()
  const cases = [
    [{ status: 401, body: 'Unauthorized' }, 'E_OAUTH_EXPIRED'],
    [{ status: 502, body: '<html>bad gateway</html>' }, 'E_BAD_RESPONSE'],
    [{ status: 200, body: { access_token: 'mock-access-no-expiry-1234', refresh_token: 'mock-refresh-no-expiry-1234' } }, 'E_BAD_RESPONSE'],
  ]
  for (const [answer, code] of cases) {
    mock.enqueueToken(answer)
    const login = await api.startLogin({ qwenHome, oauthBaseUrl: mock.url })
    const err = await rejection(login.wait())
    assert.equal(err.code, code, `${answer.status} → ${code}`)
    assert.ok(!err.message.includes('mock-access-no-expiry-1234'), 'no token in the message')
    assert.ok(!err.message.includes('mock-refresh-no-expiry-1234'), 'no token in the message')
  }
  assert.equal(fs.existsSync(credsPath), false, 'an answer the CLI could not load is not saved')
})

test('device-code errors: OAuth error → E_OAUTH_FAILED naming the endpoint; unreachable server → E_NETWORK', async () => {
  const { mock, qwenHome } = await setup({ clientId: 'some-other-client' })
  const err = await rejection(api.startLogin({ qwenHome, oauthBaseUrl: mock.url }))
  assert.equal(err.code, 'E_OAUTH_FAILED')
  assert.match(err.message, /invalid_client/)
  assert.ok(err.message.includes(mock.url + DEVICE_PATH))

  // A port that was just free: connection refused.
  const closed = await startMockQwen()
  const deadUrl = closed.url
  await closed.close()
  const net = await rejection(api.startLogin({ qwenHome, oauthBaseUrl: deadUrl }))
  assert.equal(net.code, 'E_NETWORK')
  assert.ok(net.message.includes(deadUrl + DEVICE_PATH))
})

test('debug log (QWEN_OAUTH_DEBUG=1) of a whole login holds no token, device code or verifier', async () => {
  const { mock, qwenHome } = await setup({ pendingPolls: 1, slowDownPolls: [] })
  const script = `
    const api = require(${JSON.stringify(path.join(ROOT, 'api.cjs'))})
    api.startLogin({ qwenHome: process.env.T_HOME, oauthBaseUrl: process.env.T_URL })
      .then((l) => l.wait()).then(() => process.exit(0), (e) => { console.error('FAILED', e.code); process.exit(1) })`
  const child = spawn(process.execPath, ['-e', script], {
    env: { ...process.env, QWEN_OAUTH_DEBUG: '1', T_HOME: qwenHome, T_URL: mock.url },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  child.stderr.on('data', (d) => (stderr += d))
  child.stdout.resume()
  const code = await new Promise((resolve) => child.on('close', resolve))
  assert.equal(code, 0, 'the child login succeeded')
  assert.ok(stderr.includes('[opencode-qwen-oauth]'), 'debug output was produced')
  const secrets = secretsOf(mock)
  assert.ok(secrets.length >= 4)
  for (const s of secrets) assert.ok(!stderr.includes(s), 'debug log holds no secret')
})
