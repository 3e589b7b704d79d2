// The credentials file shared with the Qwen Code CLI, through the JS API and the real addon: CLI files load
// unchanged, mtime changes are picked up, refresh rotates and saves in the CLI's refresh key order (keeping
// what the answer omits), a refused refresh keeps the file, and bad files give a clear error naming the
// path and are left untouched. node:test; also runs under `bun test`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import api from '../api.cjs'
import { startMockQwen } from './support/mock-qwen.mjs'
import { spawnChild } from './support/children.mjs'
import { DEVICE_KEYS, REFRESH_KEYS, assertUntouched, cleanupsAfterEach, rejection, sha, snapshot, throws, until } from './support/helpers.mjs'

const TOKEN_PATH = '/api/v1/oauth2/token'

const cleanups = cleanupsAfterEach()

async function setup(config = {}) {
  const mock = await startMockQwen({ config })
  const qwenHome = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-creds-'))
  cleanups.push(() => fs.rmSync(qwenHome, { recursive: true, force: true }))
  cleanups.push(() => mock.close())
  const opts = { qwenHome, oauthBaseUrl: mock.url }
  return { mock, qwenHome, opts, credsPath: path.join(qwenHome, 'oauth_creds.json') }
}

/** What the CLI writes: JSON.stringify with its key order, no trailing newline. */
function cliJson(creds, keys) {
  const o = {}
  for (const k of keys) o[k] = creds[k]
  return JSON.stringify(o, null, 2)
}

/** Write atomically, as another well-behaved process would. */
function writeAtomic(file, text) {
  const tmp = `${file}.test-${process.pid}-${Math.random().toString(16).slice(2)}.tmp`
  fs.writeFileSync(tmp, text, { mode: 0o600 })
  fs.renameSync(tmp, file)
}

/** The message must name the file and contain no secret. */
function assertClearError(err, code, file, secrets = []) {
  assert.equal(err.code, code)
  assert.ok(err.message.includes(file), `message should name ${file}: ${err.message}`)
  for (const s of secrets) assert.ok(!err.message.includes(s), 'a token leaked into the error message')
}

test('a file written by the Qwen Code CLI loads as it is and is not modified', async () => {
  const { mock, opts, credsPath } = await setup()
  const seed = { ...mock.issueTokens(), resource_url: 'portal.qwen.ai' }
  fs.writeFileSync(credsPath, cliJson(seed, DEVICE_KEYS), { mode: 0o600 })
  const before = snapshot(credsPath)

  const c = api.loadCredentials(opts)
  assert.ok(c.accessToken === seed.access_token)
  assert.ok(c.refreshToken === seed.refresh_token)
  assert.equal(c.tokenType, 'Bearer')
  assert.equal(c.resourceUrl, 'portal.qwen.ai')
  assert.equal(c.expiryDate, seed.expiry_date)
  assert.equal(c.apiBaseUrl, 'https://portal.qwen.ai/v1')

  const v = await api.getValidCredentials(opts)
  assert.ok(v.accessToken === seed.access_token)
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 0, 'a valid token needs no refresh')
  assertUntouched(credsPath, before)
})

/** Whether `promise` settles within `ticks` microtasks, that is without waiting for the event loop. */
async function settlesInMicrotasks(promise, ticks = 10) {
  let settled = false
  promise.then(
    () => (settled = true),
    () => (settled = true),
  )
  for (let i = 0; i < ticks && !settled; i++) await null
  return settled
}

test('getValidCredentials answers a token that needs nothing at once; a refresh or force still goes to the server', async () => {
  const { mock, opts, credsPath } = await setup()
  const seed = mock.issueTokens()
  fs.writeFileSync(credsPath, cliJson(seed, DEVICE_KEYS), { mode: 0o600 })

  // The async call's answer needs a turn of the event loop (the addon's runtime hands it back); a valid cached
  // token comes without one.
  const ready = api.getValidCredentials(opts)
  assert.ok(await settlesInMicrotasks(ready), 'a valid token was not answered at once')
  assert.ok((await ready).accessToken === seed.access_token)

  const forced = api.getValidCredentials(opts, { force: true })
  assert.equal(await settlesInMicrotasks(forced), false, 'force must refresh')
  const refreshed = await forced
  assert.ok(refreshed.accessToken !== seed.access_token)
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 1)

  // Expired in the file (another home: this one's cache stands for the CLI's 5 s): the answer waits for a refresh.
  const other = await setup()
  fs.writeFileSync(other.credsPath, cliJson({ ...other.mock.issueTokens(), expiry_date: Date.now() - 1000 }, DEVICE_KEYS), { mode: 0o600 })
  const expired = api.getValidCredentials(other.opts)
  assert.equal(await settlesInMicrotasks(expired), false, 'an expired token must be refreshed')
  assert.ok((await expired).expiryDate > Date.now())
  assert.equal(other.mock.requestsTo(TOKEN_PATH).length, 1, 'an expired token was not refreshed')

  // Bad options are still a rejection, not a throw.
  const bad = api.getValidCredentials({ ...opts, oauthBaseUrl: 'ftp://x' })
  assert.equal((await rejection(bad)).code, 'E_INVALID_ARG')
})

test('a rewrite by another process is picked up through the mtime check; deletion too', async () => {
  const { mock, qwenHome, credsPath } = await setup()
  const first = mock.issueTokens()
  fs.writeFileSync(credsPath, cliJson(first, DEVICE_KEYS), { mode: 0o600 })
  // The reader is a separate long-lived process with the 5 s stat throttle shortened to 50 ms.
  const child = spawnChild(['serve'], { QWEN_HOME: qwenHome, QWEN_OAUTH_BASE_URL: mock.url, QWEN_OAUTH_STAT_INTERVAL_MS: '50' })
  cleanups.push(() => child.close())
  assert.equal(await child.nextLine(), 'ready')
  assert.equal((await child.ask('load')).creds.tokenSha, sha(first.access_token))

  // Rewritten in place (same inode), as an editor or a non-atomic writer would.
  const second = mock.issueTokens()
  fs.writeFileSync(credsPath, cliJson(second, REFRESH_KEYS))
  await until(async () => (await child.ask('load')).creds?.tokenSha === sha(second.access_token), 'the rewrite to be seen')
  assert.equal((await child.ask('get')).creds.tokenSha, sha(second.access_token))

  // Replaced atomically, as the CLI does.
  const third = mock.issueTokens()
  writeAtomic(credsPath, cliJson(third, REFRESH_KEYS))
  await until(async () => (await child.ask('load')).creds?.tokenSha === sha(third.access_token), 'the replacement to be seen')

  fs.unlinkSync(credsPath)
  await until(async () => (await child.ask('load')).creds === null, 'the deletion to be seen')
  const r = await child.ask('get')
  assert.equal(r.code, 'E_CREDS_MISSING')
  assert.ok(r.message.includes(credsPath))
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 0)
})

test('between stat checks the cached credentials are used (CLI throttle)', async () => {
  const { mock, qwenHome, credsPath } = await setup()
  const first = mock.issueTokens()
  fs.writeFileSync(credsPath, cliJson(first, DEVICE_KEYS), { mode: 0o600 })
  // A throttle far longer than the test, so "not re-read yet" does not depend on timing.
  const child = spawnChild(['serve'], { QWEN_HOME: qwenHome, QWEN_OAUTH_BASE_URL: mock.url, QWEN_OAUTH_STAT_INTERVAL_MS: '600000' })
  cleanups.push(() => child.close())
  assert.equal(await child.nextLine(), 'ready')
  assert.equal((await child.ask('load')).creds.tokenSha, sha(first.access_token))
  writeAtomic(credsPath, cliJson(mock.issueTokens(), DEVICE_KEYS))
  assert.equal((await child.ask('load')).creds.tokenSha, sha(first.access_token), 'file re-read before the interval')
  assert.equal((await child.ask('get')).creds.tokenSha, sha(first.access_token))
})

test('an expired token is refreshed once: rotated refresh token, file in the CLI refresh key order, 0600', async () => {
  const { mock, opts, credsPath } = await setup()
  const seed = mock.issueTokens({ expiresInSec: -60 })
  fs.writeFileSync(credsPath, cliJson(seed, DEVICE_KEYS), { mode: 0o600 })

  const t0 = Date.now()
  const c = await api.getValidCredentials(opts)
  assert.equal(mock.refreshGrants, 1)
  const issued = mock.tokens.at(-1)
  assert.equal(issued.via, 'refresh')
  assert.ok(c.accessToken === issued.access_token)
  assert.ok(c.refreshToken === issued.refresh_token)
  assert.ok(c.refreshToken !== seed.refresh_token, 'the mock rotates refresh tokens')

  const text = fs.readFileSync(credsPath, 'utf8')
  const saved = JSON.parse(text)
  assert.deepEqual(Object.keys(saved), REFRESH_KEYS)
  assert.equal(text, cliJson(saved, REFRESH_KEYS), 'byte-for-byte JSON.stringify(creds, null, 2)')
  assert.ok(saved.access_token === issued.access_token && saved.refresh_token === issued.refresh_token)
  assert.equal(saved.resource_url, mock.host)
  assert.ok(saved.expiry_date >= t0 + 3600_000 && saved.expiry_date <= Date.now() + 3600_000)
  assert.equal(fs.statSync(credsPath).mode & 0o777, 0o600)
  assert.deepEqual(fs.readdirSync(path.dirname(credsPath)), ['oauth_creds.json'], 'no lock or temp file left')

  // The refresh grant sent the old refresh token, as the CLI does.
  const form = new URLSearchParams(mock.requestsTo(TOKEN_PATH)[0].rawBody)
  assert.equal(form.get('grant_type'), 'refresh_token')
  assert.ok(form.get('refresh_token') === seed.refresh_token)

  // Valid now: no second refresh.
  const again = await api.getValidCredentials(opts)
  assert.ok(again.accessToken === c.accessToken)
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 1)
})

test('a refresh answer without refresh_token and resource_url keeps the old ones', async () => {
  const { mock, opts, credsPath } = await setup({ rotateRefreshToken: false, refreshOmit: ['refresh_token', 'resource_url'] })
  const seed = { ...mock.issueTokens({ expiresInSec: 10 }), resource_url: 'portal.qwen.ai' } // inside the 30 s buffer
  fs.writeFileSync(credsPath, cliJson(seed, DEVICE_KEYS), { mode: 0o600 })

  const c = await api.getValidCredentials(opts)
  assert.equal(mock.refreshGrants, 1)
  assert.ok(c.accessToken === mock.tokens.at(-1).access_token)
  assert.ok(c.refreshToken === seed.refresh_token, 'old refresh token kept')
  assert.equal(c.resourceUrl, 'portal.qwen.ai', 'old resource_url kept')
  assert.equal(c.apiBaseUrl, 'https://portal.qwen.ai/v1')
  const text = fs.readFileSync(credsPath, 'utf8')
  const saved = JSON.parse(text)
  assert.equal(text, cliJson({ ...saved }, REFRESH_KEYS))
  assert.ok(saved.refresh_token === seed.refresh_token)
  assert.equal(saved.resource_url, 'portal.qwen.ai')
})

test('force refreshes a still-valid token', async () => {
  const { mock, opts, credsPath } = await setup()
  const seed = mock.issueTokens()
  fs.writeFileSync(credsPath, cliJson(seed, DEVICE_KEYS), { mode: 0o600 })
  const c = await api.getValidCredentials(opts, { force: true })
  assert.equal(mock.refreshGrants, 1)
  assert.ok(c.accessToken !== seed.access_token)
  assert.ok(JSON.parse(fs.readFileSync(credsPath, 'utf8')).access_token === c.accessToken)
})

test('a refused refresh fails with E_REFRESH_REJECTED and keeps the file byte for byte', async () => {
  const { mock, opts, credsPath } = await setup()
  const seed = mock.issueTokens({ expiresInSec: -60 })
  mock.revokeRefreshToken(seed.refresh_token)
  fs.writeFileSync(credsPath, cliJson(seed, DEVICE_KEYS), { mode: 0o600 })
  const before = snapshot(credsPath)

  const err = await rejection(api.getValidCredentials(opts))
  assertClearError(err, 'E_REFRESH_REJECTED', credsPath, [seed.access_token, seed.refresh_token])
  assert.match(err.message, /log in again/i)
  assertUntouched(credsPath, before)
  assert.ok(!fs.existsSync(path.join(path.dirname(credsPath), 'oauth_creds.lock')), 'lock released')

  // The refused refresh token is not sent again while the file still holds it.
  const err2 = await rejection(api.getValidCredentials(opts))
  assert.equal(err2.code, 'E_REFRESH_REJECTED')
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 1)
  assertUntouched(credsPath, before)
  assert.ok(api.loadCredentials(opts).refreshToken === seed.refresh_token, 'still loadable')
})

test('a refused refresh adopts credentials another process saved meanwhile', async () => {
  const { mock, opts, credsPath } = await setup({ refreshDelayMs: 300 })
  const seed = mock.issueTokens({ expiresInSec: -60 })
  mock.revokeRefreshToken(seed.refresh_token)
  fs.writeFileSync(credsPath, cliJson(seed, DEVICE_KEYS), { mode: 0o600 })

  const pending = api.getValidCredentials(opts)
  await mock.waitForRequests(TOKEN_PATH, 1)
  // While our refresh is in flight, a login elsewhere (which takes no lock) writes new credentials.
  const fresh = mock.issueTokens()
  writeAtomic(credsPath, cliJson(fresh, DEVICE_KEYS))
  const c = await pending
  assert.ok(c.accessToken === fresh.access_token)
  assert.ok(c.refreshToken === fresh.refresh_token)
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 1)
})

test('malformed, truncated and incomplete files: E_CREDS_INVALID naming the file, file untouched', async () => {
  const { mock, opts, credsPath } = await setup()
  const seed = mock.issueTokens({ expiresInSec: -60 })
  const full = cliJson(seed, DEVICE_KEYS)
  const cases = [
    ['malformed', 'this is not json'],
    ['truncated', full.slice(0, Math.floor(full.length * 0.6))],
    ['empty', ''],
    ['no refresh_token', JSON.stringify({ ...seed, refresh_token: undefined }, null, 2)],
    ['expiry_date 0', JSON.stringify({ ...seed, expiry_date: 0 }, null, 2)],
    ['expiry_date string', JSON.stringify({ ...seed, expiry_date: String(seed.expiry_date) }, null, 2)],
    ['array', '[]'],
  ]
  for (const [name, text] of cases) {
    writeAtomic(credsPath, text)
    const before = snapshot(credsPath)
    // A file that failed to load is read again on every call, so each version is seen at once.
    const err = throws(() => api.loadCredentials(opts))
    assertClearError(err, 'E_CREDS_INVALID', credsPath, [seed.access_token, seed.refresh_token])
    const err2 = await rejection(api.getValidCredentials(opts))
    assertClearError(err2, 'E_CREDS_INVALID', credsPath, [seed.access_token, seed.refresh_token])
    assertUntouched(credsPath, before)
  }
  assert.match(throws(() => api.loadCredentials(opts)).message, /not a JSON object/)
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 0)
  assert.ok(!fs.existsSync(path.join(path.dirname(credsPath), 'oauth_creds.lock')))
})

test('unreadable: a directory in place of the file, or QWEN_HOME being a file → E_CREDS_UNREADABLE', async () => {
  const { mock, opts, qwenHome, credsPath } = await setup()
  fs.mkdirSync(credsPath)
  fs.writeFileSync(path.join(credsPath, 'keep'), 'x')
  assertClearError(throws(() => api.loadCredentials(opts)), 'E_CREDS_UNREADABLE', credsPath)
  assertClearError(await rejection(api.getValidCredentials(opts)), 'E_CREDS_UNREADABLE', credsPath)
  assert.equal(fs.readFileSync(path.join(credsPath, 'keep'), 'utf8'), 'x')

  const homeFile = path.join(qwenHome, 'not-a-dir')
  fs.writeFileSync(homeFile, 'plain file')
  const opts2 = { qwenHome: homeFile, oauthBaseUrl: mock.url }
  assertClearError(throws(() => api.loadCredentials(opts2)), 'E_CREDS_UNREADABLE', path.join(homeFile, 'oauth_creds.json'))
  assert.equal(fs.readFileSync(homeFile, 'utf8'), 'plain file')
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 0)
})

test('no file: loadCredentials is null and getValidCredentials says how to log in', async () => {
  const { opts, credsPath } = await setup()
  assert.equal(api.loadCredentials(opts), null)
  const err = await rejection(api.getValidCredentials(opts))
  assertClearError(err, 'E_CREDS_MISSING', credsPath)
  assert.match(err.message, /auth login/)
  assert.deepEqual(fs.readdirSync(path.dirname(credsPath)), [], 'nothing created on read')
})
