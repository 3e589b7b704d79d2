// Bad environments and bad input, through the JS API and the real addon: clock skew, a file edited by hand
// while a process runs, read-only and full disks (a tiny tmpfs; skipped with the reason when `mount` is not
// allowed), QWEN_HOME missing or a regular file, bad option and environment values, and bad answers from the
// token endpoint. Each gives a clear error code and loses nothing. node:test.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import api from '../api.cjs'
import { startMockQwen } from './support/mock-qwen.mjs'
import { spawnChild } from './support/children.mjs'
import { DEVICE_KEYS, REFRESH_KEYS, assertUntouched, cleanupsAfterEach, rejection, sha, snapshot, throws, removeTempDir, until } from './support/helpers.mjs'

const TOKEN_PATH = '/api/v1/oauth2/token'
const NO_PACING = { minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0 }

const cleanups = cleanupsAfterEach()

function tempDir(tag) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `qwen-bad-${tag}-`))
  cleanups.push(() => removeTempDir(d))
  return d
}

async function mockServer(config = {}) {
  const mock = await startMockQwen({ config })
  cleanups.push(() => mock.close())
  return mock
}

function cliJson(creds, keys = DEVICE_KEYS) {
  const o = {}
  for (const k of keys) o[k] = creds[k]
  return JSON.stringify(o, null, 2)
}

/** The error has the code, names `names` and leaks none of `secrets`. */
function assertClear(err, code, names, secrets = []) {
  assert.equal(err.code, code, err.message)
  for (const n of [].concat(names)) assert.ok(err.message.includes(n), `message should name ${n}: ${err.message}`)
  for (const s of secrets) assert.ok(!err.message.includes(s), 'a token leaked into the error message')
}

/** A tmpfs of `sizeKb` at a new directory, or null (with the reason) when this machine does not allow it. */
function tinyDisk(t, sizeKb) {
  const dir = tempDir('disk')
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeKb}k,mode=0700`, 'tmpfs', dir], { stdio: 'pipe' })
  } catch (err) {
    t.skip(`cannot mount a tmpfs here (${String(err.stderr || err.message).trim().split('\n')[0]})`)
    return null
  }
  cleanups.push(() => execFileSync('umount', ['-l', dir]))
  return dir
}

/** Fill the file system of `dir` to the last page with a file; returns its path and descriptor. */
function fill(dir) {
  const filler = path.join(dir, 'filler')
  const fd = fs.openSync(filler, 'w')
  const page = Buffer.alloc(4096, 1)
  let size = 0
  for (;;) {
    try {
      const n = fs.writeSync(fd, page)
      size += n
      if (n < page.length) break
    } catch (err) {
      if (err.code === 'ENOSPC') break
      throw err
    }
  }
  return { filler, fd, size }
}

const expiredSeed = (mock) => mock.issueTokens({ expiresInSec: -60 })

// ─── clock skew ──────────────────────────────────────────────────────────────────────────────────

test('clock behind the server: an expiry years ahead, but the server says expired → 401, one forced refresh, retried', async () => {
  const mock = await mockServer()
  const home = tempDir('skew-future')
  const credsPath = path.join(home, 'oauth_creds.json')
  const seed = expiredSeed(mock) // expired at the server
  fs.writeFileSync(credsPath, cliJson({ ...seed, expiry_date: Date.now() + 10 * 365 * 86_400_000 }), { mode: 0o600 })
  const opts = { qwenHome: home, oauthBaseUrl: mock.url, ...NO_PACING }
  // Locally it is valid: no refresh just to hand it out.
  assert.ok((await api.getValidCredentials(opts)).accessToken === seed.access_token)
  assert.equal(mock.refreshGrants, 0)

  const res = await api.createClient(opts).fetch(`${mock.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'coder-model', messages: [{ role: 'user', content: 'hi' }] }),
  })
  assert.equal(res.status, 200)
  await res.json()
  assert.equal(mock.refreshGrants, 1)
  const chats = mock.requestsTo('/v1/chat/completions').map((r) => r.status)
  assert.deepEqual(chats, [401, 200])
  const saved = JSON.parse(fs.readFileSync(credsPath, 'utf8'))
  assert.ok(saved.access_token === mock.tokens.at(-1).access_token)
  assert.ok(saved.expiry_date <= Date.now() + 3600_000, 'the new expiry comes from the local clock')
})

test('clock ahead / file from long ago: an expiry in 1970 → one refresh, new expiry = local now + expires_in', async () => {
  const mock = await mockServer()
  const home = tempDir('skew-past')
  const seed = mock.issueTokens() // valid at the server
  fs.writeFileSync(path.join(home, 'oauth_creds.json'), cliJson({ ...seed, expiry_date: 1 }), { mode: 0o600 })
  const opts = { qwenHome: home, oauthBaseUrl: mock.url }
  const t0 = Date.now()
  const c = await api.getValidCredentials(opts)
  assert.equal(mock.refreshGrants, 1)
  assert.ok(c.expiryDate >= t0 + 3600_000 && c.expiryDate <= Date.now() + 3600_000)
  assert.ok((await api.getValidCredentials(opts)).accessToken === c.accessToken)
  assert.equal(mock.refreshGrants, 1, 'no second refresh')
})

test('clock set back: a lock dated an hour in the future is broken, not waited for until the clock catches up', async () => {
  const mock = await mockServer()
  const home = tempDir('skew-lock')
  fs.writeFileSync(path.join(home, 'oauth_creds.json'), cliJson(expiredSeed(mock)), { mode: 0o600 })
  const lockPath = path.join(home, 'oauth_creds.lock')
  fs.writeFileSync(lockPath, crypto.randomUUID(), { mode: 0o600 })
  const future = new Date(Date.now() + 3600_000)
  fs.utimesSync(lockPath, future, future)
  // Were the lock respected, this would end in E_LOCK_TIMEOUT after ~29 s.
  const c = await api.getValidCredentials({ qwenHome: home, oauthBaseUrl: mock.url })
  assert.ok(c.accessToken === mock.tokens.at(-1).access_token)
  assert.deepEqual(fs.readdirSync(home), ['oauth_creds.json'])
})

// ─── the file edited by hand while a process runs ────────────────────────────────────────────────

test('a file edited by hand while running: valid edits are picked up; an invalid one gives E_CREDS_INVALID and is left as it is', async () => {
  const mock = await mockServer()
  const home = tempDir('edit')
  const credsPath = path.join(home, 'oauth_creds.json')
  const first = mock.issueTokens()
  fs.writeFileSync(credsPath, cliJson(first), { mode: 0o600 })
  const child = spawnChild(['serve'], { QWEN_HOME: home, QWEN_OAUTH_BASE_URL: mock.url, QWEN_OAUTH_STAT_INTERVAL_MS: '50' })
  cleanups.push(() => child.close())
  assert.equal(await child.nextLine(), 'ready')
  assert.equal((await child.ask('get')).creds.tokenSha, sha(first.access_token))

  // A hand edit in place (same inode), e.g. pasting a token from another machine.
  const second = mock.issueTokens()
  fs.writeFileSync(credsPath, JSON.stringify(second, null, 4) + '\n')
  await until(async () => (await child.ask('get')).creds?.tokenSha === sha(second.access_token), 'the edit to be used', 10_000)

  // A broken edit (a trailing comma): a clear error on every call, nothing written, nothing refreshed.
  const broken = cliJson(second).replace(/\n}$/, ',\n}')
  fs.writeFileSync(credsPath, broken)
  const before = snapshot(credsPath)
  const r = await until(async () => {
    const a = await child.ask('get')
    return a.code === 'E_CREDS_INVALID' && a
  }, 'the broken edit to be reported', 10_000)
  assertClear(r, 'E_CREDS_INVALID', [credsPath, 'not valid JSON'], [second.access_token, second.refresh_token])
  assert.match(r.message, /left as it is/)
  assert.equal((await child.ask('load')).code, 'E_CREDS_INVALID')
  assertUntouched(credsPath, before)

  // Fixed by hand: back in business without a restart.
  fs.writeFileSync(credsPath, cliJson(second))
  await until(async () => (await child.ask('get')).creds?.tokenSha === sha(second.access_token), 'the fix to be used', 10_000)
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 0)
})

// ─── read-only and full disks ────────────────────────────────────────────────────────────────────

test('read-only file system: a valid token still works; an expired one gives E_IO naming the lock, nothing sent; a login gives E_CREDS_WRITE', async (t) => {
  const disk = tinyDisk(t, 256)
  if (!disk) return
  const mock = await mockServer()
  const validHome = path.join(disk, 'valid')
  const expiredHome = path.join(disk, 'expired')
  fs.mkdirSync(validHome, { mode: 0o700 })
  fs.mkdirSync(expiredHome, { mode: 0o700 })
  const valid = mock.issueTokens()
  const expired = expiredSeed(mock)
  fs.writeFileSync(path.join(validHome, 'oauth_creds.json'), cliJson(valid), { mode: 0o600 })
  fs.writeFileSync(path.join(expiredHome, 'oauth_creds.json'), cliJson(expired), { mode: 0o600 })
  execFileSync('mount', ['-o', 'remount,ro', disk])
  const before = snapshot(path.join(expiredHome, 'oauth_creds.json'))

  const ok = await api.getValidCredentials({ qwenHome: validHome, oauthBaseUrl: mock.url })
  assert.ok(ok.accessToken === valid.access_token)

  const err = await rejection(api.getValidCredentials({ qwenHome: expiredHome, oauthBaseUrl: mock.url }))
  assertClear(err, 'E_IO', [path.join(expiredHome, 'oauth_creds.lock'), 'Read-only file system'], [expired.access_token, expired.refresh_token])
  // The refresh was not even attempted: the server did not rotate the refresh token in the file.
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 0)
  assertUntouched(path.join(expiredHome, 'oauth_creds.json'), before)

  const newHome = path.join(disk, 'new')
  const login = await api.startLogin({ qwenHome: newHome, oauthBaseUrl: mock.url })
  const loginErr = await rejection(login.wait())
  assertClear(loginErr, 'E_CREDS_WRITE', [path.join(newHome, 'oauth_creds.json'), 'Read-only file system'])
  assert.match(loginErr.message, /was not changed/)
})

test('full disk: no room for the lock → E_IO and no refresh; room for the lock only → E_CREDS_WRITE, the new tokens kept in memory and saved once there is space', async (t) => {
  const disk = tinyDisk(t, 64)
  if (!disk) return
  const mock = await mockServer()
  const home = path.join(disk, 'qwen')
  fs.mkdirSync(home, { mode: 0o700 })
  const credsPath = path.join(home, 'oauth_creds.json')
  const seed = expiredSeed(mock)
  fs.writeFileSync(credsPath, cliJson(seed), { mode: 0o600 })
  const before = snapshot(credsPath)
  const opts = { qwenHome: home, oauthBaseUrl: mock.url }
  const secrets = () => mock.tokens.flatMap((p) => [p.access_token, p.refresh_token])

  const { filler, fd, size } = fill(disk)
  const full = await rejection(api.getValidCredentials(opts))
  assertClear(full, 'E_IO', [path.join(home, 'oauth_creds.lock'), 'No space left on device'], secrets())
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 0, 'a refresh whose answer cannot be saved must not start')
  assertUntouched(credsPath, before)
  assert.deepEqual(fs.readdirSync(home), ['oauth_creds.json'])

  // One free page: enough for the lock, not for the new file next to it.
  fs.ftruncateSync(fd, size - 4096)
  const err = await rejection(api.getValidCredentials(opts))
  assertClear(err, 'E_CREDS_WRITE', [credsPath, 'No space left on device'], secrets())
  assert.match(err.message, /was not changed/)
  assert.equal(mock.refreshGrants, 1)
  assertUntouched(credsPath, before)
  assert.deepEqual(fs.readdirSync(home), ['oauth_creds.json'], 'no temp file or lock left')
  // The server has rotated the refresh token; the process keeps the new pair and goes on working.
  const newest = mock.tokens.at(-1)
  const again = await api.getValidCredentials(opts)
  assert.ok(again.accessToken === newest.access_token && again.refreshToken === newest.refresh_token)
  assertUntouched(credsPath, before)

  // Space again: the next call saves what was kept, so nothing was lost.
  fs.closeSync(fd)
  fs.unlinkSync(filler)
  const after = await api.getValidCredentials(opts)
  assert.ok(after.accessToken === newest.access_token)
  const saved = JSON.parse(fs.readFileSync(credsPath, 'utf8'))
  assert.ok(saved.access_token === newest.access_token && saved.refresh_token === newest.refresh_token)
  assert.equal(fs.readFileSync(credsPath, 'utf8'), cliJson(saved, REFRESH_KEYS))
  assert.equal(mock.refreshGrants, 1)
})

// ─── QWEN_HOME ───────────────────────────────────────────────────────────────────────────────────

test('QWEN_HOME missing: no credentials (null / E_CREDS_MISSING, nothing created); a login creates it 0700 with the file 0600', async () => {
  const mock = await mockServer()
  const home = path.join(tempDir('missing'), 'a', 'b')
  const opts = { qwenHome: home, oauthBaseUrl: mock.url }
  assert.equal(api.loadCredentials(opts), null)
  assertClear(await rejection(api.getValidCredentials(opts)), 'E_CREDS_MISSING', path.join(home, 'oauth_creds.json'))
  assert.ok(!fs.existsSync(path.dirname(home)), 'reading created directories')

  const login = await api.startLogin(opts)
  const c = await login.wait()
  assert.equal(fs.statSync(home).mode & 0o777, 0o700)
  assert.equal(fs.statSync(path.dirname(home)).mode & 0o777, 0o700)
  assert.equal(fs.statSync(path.join(home, 'oauth_creds.json')).mode & 0o777, 0o600)
  assert.ok(api.loadCredentials(opts).accessToken === c.accessToken)
})

test('QWEN_HOME is a regular file: E_CREDS_UNREADABLE on load, E_CREDS_WRITE on login, the file untouched', async () => {
  const mock = await mockServer()
  const home = path.join(tempDir('homefile'), 'qwen')
  fs.writeFileSync(home, 'my notes')
  const opts = { qwenHome: home, oauthBaseUrl: mock.url }
  const credsPath = path.join(home, 'oauth_creds.json')
  assertClear(throws(() => api.loadCredentials(opts)), 'E_CREDS_UNREADABLE', credsPath)
  assertClear(await rejection(api.getValidCredentials(opts)), 'E_CREDS_UNREADABLE', credsPath)
  const login = await api.startLogin(opts)
  const err = await rejection(login.wait())
  assertClear(err, 'E_CREDS_WRITE', [credsPath, 'not a directory'])
  assert.equal(fs.readFileSync(home, 'utf8'), 'my notes')
})

// ─── options and environment ─────────────────────────────────────────────────────────────────────

test('bad option and environment values → E_INVALID_ARG naming the option', async () => {
  const cases = [
    [{ qwenHome: 5 }, 'qwenHome'],
    [{ trustedHosts: 'qwen.example' }, 'trustedHosts'],
    [{ maxRetries: -1 }, 'maxRetries'],
    [{ minIntervalMs: Number.NaN }, 'minIntervalMs'],
    [{ jitterMinMs: 10, jitterMaxMs: 5 }, 'jitterMaxMs'],
    [{ oauthBaseUrl: 'chat.qwen.ai' }, 'oauthBaseUrl'],
    [{ cliVersion: '1.0 beta' }, 'cliVersion'],
    ['yes', 'options'],
  ]
  for (const [opts, name] of cases) {
    assertClear(throws(() => api.loadCredentials(opts)), 'E_INVALID_ARG', name)
    assertClear(await rejection(api.getValidCredentials(opts)), 'E_INVALID_ARG', name)
  }
  // The same through the environment (Node passes process.env changes on to the addon).
  const saved = process.env.QWEN_MAX_RETRIES
  process.env.QWEN_MAX_RETRIES = 'lots'
  try {
    assertClear(throws(() => api.createClient({ qwenHome: tempDir('env') })), 'E_INVALID_ARG', ['QWEN_MAX_RETRIES', 'lots'])
  } finally {
    if (saved === undefined) delete process.env.QWEN_MAX_RETRIES
    else process.env.QWEN_MAX_RETRIES = saved
  }
})

// ─── token endpoint answers ──────────────────────────────────────────────────────────────────────

test('bad refresh answers: each a clear error, the file untouched, no lock left', async () => {
  const mock = await mockServer()
  const cases = [
    [{ status: 500, body: { error: 'server_error' } }, 'E_BAD_RESPONSE', '500'],
    [{ status: 503, body: 'upstream down' }, 'E_BAD_RESPONSE', '503'],
    [{ status: 200, body: '<html>maintenance</html>' }, 'E_BAD_RESPONSE', 'not a JSON object'],
    [{ status: 200, body: { error: 'temporarily_unavailable', error_description: 'try later' } }, 'E_OAUTH_FAILED', 'temporarily_unavailable'],
    [{ status: 200, body: { token_type: 'Bearer', expires_in: 3600 } }, 'E_BAD_RESPONSE', 'no access_token'],
    [{ status: 401, body: { error: 'invalid_client' } }, 'E_REFRESH_REJECTED', 'was kept'],
  ]
  for (const [answer, code, words] of cases) {
    const home = tempDir('answer')
    const credsPath = path.join(home, 'oauth_creds.json')
    const seed = expiredSeed(mock)
    fs.writeFileSync(credsPath, cliJson(seed), { mode: 0o600 })
    const before = snapshot(credsPath)
    mock.enqueueToken(answer)
    const err = await rejection(api.getValidCredentials({ qwenHome: home, oauthBaseUrl: mock.url }))
    assertClear(err, code, [words], [seed.access_token, seed.refresh_token])
    assertUntouched(credsPath, before)
    assert.deepEqual(fs.readdirSync(home), ['oauth_creds.json'])
  }
})

test('a refresh answer without or with a nonsensical expires_in: saved with 3600 s, never an invalid file', async () => {
  const mock = await mockServer()
  for (const expires_in of [undefined, 0, -5, 'soon']) {
    const home = tempDir('expires')
    fs.writeFileSync(path.join(home, 'oauth_creds.json'), cliJson(expiredSeed(mock)), { mode: 0o600 })
    const body = { access_token: `mock-access-${crypto.randomUUID()}`, token_type: 'Bearer', refresh_token: `mock-refresh-${crypto.randomUUID()}` }
    if (expires_in !== undefined) body.expires_in = expires_in
    mock.enqueueToken({ status: 200, body })
    const t0 = Date.now()
    const c = await api.getValidCredentials({ qwenHome: home, oauthBaseUrl: mock.url })
    assert.ok(c.expiryDate >= t0 + 3600_000 && c.expiryDate <= Date.now() + 3600_000, String(expires_in))
    const saved = JSON.parse(fs.readFileSync(path.join(home, 'oauth_creds.json'), 'utf8'))
    assert.equal(typeof saved.expiry_date, 'number')
  }
})

test('the OAuth server unreachable: E_NETWORK naming the endpoint, the file untouched', async () => {
  const mock = await mockServer()
  const home = tempDir('network')
  const credsPath = path.join(home, 'oauth_creds.json')
  fs.writeFileSync(credsPath, cliJson(expiredSeed(mock)), { mode: 0o600 })
  const before = snapshot(credsPath)
  // A port that was just free: nothing listens there.
  const dead = await startMockQwen()
  const deadUrl = dead.url
  await dead.close()
  const err = await rejection(api.getValidCredentials({ qwenHome: home, oauthBaseUrl: deadUrl }))
  assertClear(err, 'E_NETWORK', `${deadUrl}${TOKEN_PATH}`)
  assertUntouched(credsPath, before)
})
