// Interoperability with the real Qwen Code CLI (npm @qwen-code/qwen-code, pinned in package.json): its own
// SharedTokenManager and QwenOAuth2Client, loaded from its bundle, refresh against the mock in two processes
// while two processes of ours do the same on the same QWEN_HOME. The only change to the CLI is where its
// fetch goes: its OAuth host is the constant https://chat.qwen.ai, so the child's global fetch sends those
// calls to the mock (see support/interop-child.mjs). node:test.
//
// Tokens live 1 s, inside the 30 s refresh margin both sides use, so the CLI refreshes on every call and
// ours whenever the file holds a token it did not get itself: every call contends for oauth_creds.lock
// and must use the refresh token the other side just saved (the mock rotates refresh tokens and answers a
// used one with invalid_grant, on which the CLI would delete the file).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startMockQwen } from './support/mock-qwen.mjs'
import { spawnScript } from './support/children.mjs'
import { DEVICE_KEYS, cleanupsAfterEach } from './support/helpers.mjs'

const TOKEN_PATH = '/api/v1/oauth2/token'
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'support', 'interop-child.mjs')
const CALLS = 50

const cleanups = cleanupsAfterEach()

function pick(o, keys) {
  const out = {}
  for (const k of keys) out[k] = o[k]
  return out
}

test('the Qwen Code CLI token manager and ours on one QWEN_HOME: no invalid_grant, no token lost, every version valid for both', async (t) => {
  const cliPkg = JSON.parse(fs.readFileSync(new URL('../node_modules/@qwen-code/qwen-code/package.json', import.meta.url), 'utf8'))
  assert.equal(cliPkg.version, '0.24.4', 'the pinned CLI version')

  const mock = await startMockQwen({ config: { tokenLifetimeSec: 1 } })
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-interop-'))
  cleanups.push(() => fs.rmSync(home, { recursive: true, force: true }))
  cleanups.push(() => mock.close())
  const credsPath = path.join(home, 'oauth_creds.json')
  const lockPath = path.join(home, 'oauth_creds.lock')
  const seed = mock.issueTokens({ expiresInSec: 1 })
  fs.writeFileSync(credsPath, JSON.stringify(pick(seed, DEVICE_KEYS), null, 2), { mode: 0o600 })

  const watcher = spawnScript(CHILD, ['watch', credsPath], { QWEN_OAUTH_STAT_INTERVAL_MS: '0' })
  cleanups.push(() => watcher.close())
  assert.equal(await watcher.nextLine(), 'ready')

  const env = { QWEN_HOME: home, QWEN_OAUTH_BASE_URL: mock.url, MOCK_URL: mock.url }
  // One of our processes with the CLI's 5 s stat throttle, one that looks at the file on every call (and so
  // refreshes after each CLI refresh, contending for the lock far more often).
  const sides = [
    ['cli', {}],
    ['ours', {}],
    ['cli', {}],
    ['ours', { QWEN_OAUTH_STAT_INTERVAL_MS: '0' }],
  ].map(([kind, extra]) => {
    const c = spawnScript(CHILD, [kind, String(CALLS)], { ...env, ...extra })
    cleanups.push(() => c.close())
    return { kind, c }
  })
  for (const s of sides) assert.equal(await s.c.nextLine(), 'ready')
  for (const s of sides) s.c.send('go')
  const results = []
  for (const s of sides) results.push({ kind: s.kind, ...JSON.parse(await s.c.nextLine(180_000)) })
  // Every side is done; nobody may hold the lock now (checked before the CLI processes exit, since the
  // CLI's exit handler deletes the lock file whoever owns it).
  assert.ok(!fs.existsSync(lockPath), 'a lock was left behind')
  watcher.send('stop')
  const watched = JSON.parse(await watcher.nextLine(60_000))

  for (const r of results) {
    assert.deepEqual(r.errors, [], `${r.kind} side failed`)
    assert.ok(r.last, `${r.kind} side got no credentials`)
  }

  // The server never saw a used or unknown refresh token: no invalid_grant, every request a grant.
  const requests = mock.requestsTo(TOKEN_PATH)
  assert.deepEqual(
    requests.map((r) => r.status).filter((s) => s !== 200),
    [],
    'a refresh was refused (invalid_grant): one side used a refresh token the other had already rotated',
  )
  assert.equal(mock.refreshGrants, requests.length)
  // The CLI's fetch (undici) says `user-agent: node`; our OAuth calls send no user-agent.
  const byCli = requests.filter((r) => r.headers['user-agent'] === 'node').length
  assert.equal(requests.filter((r) => r.headers['user-agent'] !== undefined && r.headers['user-agent'] !== 'node').length, 0)
  const byUs = requests.length - byCli
  assert.ok(byCli >= CALLS, `the CLI refreshed only ${byCli} times`) // it refreshes on every call
  assert.ok(byUs > 0, 'our side never refreshed')

  // No refresh token lost: the file holds the newest pair, whose refresh token the server still accepts.
  const final = JSON.parse(fs.readFileSync(credsPath, 'utf8'))
  const newest = mock.tokens.at(-1)
  assert.ok(final.access_token === newest.access_token && final.refresh_token === newest.refresh_token, 'the file does not hold the newest tokens')
  assert.deepEqual(Object.keys(final), ['access_token', 'token_type', 'refresh_token', 'resource_url', 'expiry_date'])

  // Every version of the file, whoever wrote it, was there, whole, and accepted by both implementations.
  assert.deepEqual(watched.problems, [])
  assert.ok(watched.versions >= 10, `only ${watched.versions} versions of the file were seen`)
  assert.deepEqual(
    fs.readdirSync(home).filter((n) => n !== 'oauth_creds.json'),
    [],
    'temp or lock files left behind',
  )
  t.diagnostic(
    `${requests.length} refreshes (${byCli} by the CLI, ${byUs} by us), ${watched.versions} file versions seen in ${watched.reads} reads`,
  )
})

test('logins: the CLI uses the file our login wrote, we use the file its device flow wrote, no refresh needed', async () => {
  const { default: api } = await import('../api.cjs')
  const crypto = await import('node:crypto')
  const sha = (s) => crypto.createHash('sha256').update(String(s)).digest('hex')
  const mock = await startMockQwen()
  cleanups.push(() => mock.close())
  const run = async (mode, env) => {
    const c = spawnScript(CHILD, [mode], env)
    cleanups.push(() => c.close())
    const r = JSON.parse(await c.nextLine(60_000))
    await c.exited
    return r
  }

  // Our device login (device-flow key order) → the CLI's token manager takes it as it is.
  const ourHome = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-interop-login-'))
  cleanups.push(() => fs.rmSync(ourHome, { recursive: true, force: true }))
  const login = await api.startLogin({ qwenHome: ourHome, oauthBaseUrl: mock.url })
  const ours = await login.wait()
  const byCli = await run('cli-get', { QWEN_HOME: ourHome, MOCK_URL: mock.url })
  assert.ok(byCli.ok, `the CLI refused our login: ${byCli.type} ${byCli.message}`)
  assert.equal(byCli.tokenSha, sha(ours.accessToken))
  assert.equal(byCli.refreshSha, sha(ours.refreshToken))

  // The CLI's own login (its device flow, its cacheQwenCredentials) → ours takes it as it is.
  const cliHome = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-interop-cli-login-'))
  cleanups.push(() => fs.rmSync(cliHome, { recursive: true, force: true }))
  const cliLogin = await run('cli-login', { QWEN_HOME: cliHome, MOCK_URL: mock.url })
  assert.ok(cliLogin.ok, `the CLI's login failed: ${cliLogin.type} ${cliLogin.message}`)
  const text = fs.readFileSync(path.join(cliHome, 'oauth_creds.json'), 'utf8')
  assert.deepEqual(Object.keys(JSON.parse(text)), DEVICE_KEYS, "the CLI's device-flow key order")
  const loaded = api.loadCredentials({ qwenHome: cliHome, oauthBaseUrl: mock.url })
  assert.equal(sha(loaded.accessToken), cliLogin.tokenSha)
  const valid = await api.getValidCredentials({ qwenHome: cliHome, oauthBaseUrl: mock.url })
  assert.equal(sha(valid.accessToken), cliLogin.tokenSha)
  assert.equal(sha(valid.refreshToken), cliLogin.refreshSha)

  assert.equal(mock.deviceGrants, 2)
  assert.equal(mock.refreshGrants, 0, 'a fresh login needs no refresh on either side')
})
