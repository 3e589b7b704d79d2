// Cross-process coordination with real processes: 8 processes refreshing an expired token at once make
// exactly one refresh at the server and the file is valid JSON at every moment; a lock held by a live
// process is waited for; a stale one (mtime 60 s old) is broken. node:test; also runs under `bun test`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import api from '../api.cjs'
import { startMockQwen } from './support/mock-qwen.mjs'
import { spawnChild } from './support/children.mjs'
import { DEVICE_KEYS, REFRESH_KEYS, cleanupsAfterEach, sha, cliInvalid } from './support/helpers.mjs'

const TOKEN_PATH = '/api/v1/oauth2/token'

const cleanups = cleanupsAfterEach()

async function setup(config = {}) {
  const mock = await startMockQwen({ config })
  const qwenHome = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-mp-'))
  cleanups.push(() => fs.rmSync(qwenHome, { recursive: true, force: true }))
  cleanups.push(() => mock.close())
  const credsPath = path.join(qwenHome, 'oauth_creds.json')
  const lockPath = path.join(qwenHome, 'oauth_creds.lock')
  // An expired token, as the CLI's device login saved it.
  const seed = mock.issueTokens({ expiresInSec: -60 })
  fs.writeFileSync(credsPath, JSON.stringify(pick(seed, DEVICE_KEYS), null, 2), { mode: 0o600 })
  const env = { QWEN_HOME: qwenHome, QWEN_OAUTH_BASE_URL: mock.url }
  return { mock, qwenHome, credsPath, lockPath, seed, env }
}

function pick(o, keys) {
  const out = {}
  for (const k of keys) out[k] = o[k]
  return out
}

function child(args, env) {
  const c = spawnChild(args, env)
  cleanups.push(() => c.close())
  return c
}

/** Reads the file as fast as the event loop allows until stopped; records every anomaly. */
function startWatcher(file) {
  const state = { reads: 0, problems: [], seen: new Set(), stop: false }
  state.done = (async () => {
    while (!state.stop) {
      try {
        const text = fs.readFileSync(file, 'utf8')
        const bad = cliInvalid(text)
        if (bad) state.problems.push(bad)
        else state.seen.add(sha(JSON.parse(text).access_token))
      } catch (err) {
        state.problems.push(err.code || 'read error')
      }
      state.reads++
      await new Promise((r) => setImmediate(r))
    }
  })()
  return state
}

const dirEntries = (dir) => fs.readdirSync(dir).sort()

test('8 processes on an expired token: exactly 1 refresh, all get the new token, the file always valid', async () => {
  const { mock, qwenHome, credsPath, seed, env } = await setup({ refreshDelayMs: 400 })
  const children = Array.from({ length: 8 }, () => child(['get', '--wait-go'], env))
  for (const c of children) assert.equal(await c.nextLine(), 'ready')

  const watcher = startWatcher(credsPath)
  for (const c of children) c.send('go')
  const results = []
  for (const c of children) results.push(JSON.parse(await c.nextLine()))
  watcher.stop = true
  await watcher.done

  for (const r of results) assert.ok(r.ok, `child failed: ${r.code} ${r.message}`)
  assert.equal(mock.refreshGrants, 1, 'exactly one refresh grant')
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 1, 'exactly one token request')
  const issued = mock.tokens.at(-1)
  assert.equal(issued.via, 'refresh')
  for (const r of results) {
    assert.equal(r.tokenSha, sha(issued.access_token))
    assert.equal(r.refreshSha, sha(issued.refresh_token))
  }

  const text = fs.readFileSync(credsPath, 'utf8')
  const saved = JSON.parse(text)
  assert.ok(saved.access_token === issued.access_token)
  assert.equal(text, JSON.stringify(pick(saved, REFRESH_KEYS), null, 2))
  assert.deepEqual(watcher.problems, [], 'the file was missing, partial or invalid at some moment')
  assert.ok(watcher.reads >= 20, `watcher read only ${watcher.reads} times`)
  assert.ok(watcher.seen.has(sha(seed.access_token)) && watcher.seen.has(sha(issued.access_token)), 'watched across the switch')
  assert.deepEqual(dirEntries(qwenHome), ['oauth_creds.json'], 'no lock or temp file left')
})

test('one process, many concurrent callers: one refresh in flight', async () => {
  const { mock, qwenHome } = await setup({ refreshDelayMs: 200 })
  const opts = { qwenHome, oauthBaseUrl: mock.url }
  const all = await Promise.all(Array.from({ length: 10 }, () => api.getValidCredentials(opts)))
  assert.equal(mock.refreshGrants, 1)
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 1)
  const issued = mock.tokens.at(-1)
  for (const c of all) assert.ok(c.accessToken === issued.access_token)
})

test('a lock held by another live process is waited for', async () => {
  const { mock, lockPath, seed, env } = await setup()
  const holder = child(['hold-lock', lockPath], {})
  assert.equal(await holder.nextLine(), 'held')
  const holderId = fs.readFileSync(lockPath, 'utf8')

  const waiter = child(['get'], { ...env, QWEN_OAUTH_DEBUG: '1' })
  assert.equal(await waiter.nextLine(), 'ready')
  await waiter.waitForStderr(/is held by another process; waiting/)
  // Still waiting: nothing reached the server and the lock is still the holder's.
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 0)
  assert.equal(fs.readFileSync(lockPath, 'utf8'), holderId)

  const releasedAt = Date.now()
  holder.send('release')
  assert.match(await holder.nextLine(), /^released \d+$/)
  const r = JSON.parse(await waiter.nextLine())
  assert.ok(r.ok, `waiter failed: ${r.code} ${r.message}`)
  assert.equal(mock.refreshGrants, 1)
  assert.ok(mock.requestsTo(TOKEN_PATH)[0].at >= releasedAt, 'refreshed only after the lock was released')
  assert.equal(r.tokenSha, sha(mock.tokens.at(-1).access_token))
  assert.match(waiter.stderr(), /took .*oauth_creds\.lock after \d+ attempts/)
  assert.ok(!fs.existsSync(lockPath))
  // The debug log is redacted.
  for (const t of [seed.access_token, seed.refresh_token, mock.tokens.at(-1).access_token, mock.tokens.at(-1).refresh_token]) {
    assert.ok(!waiter.stderr().includes(t), 'a token reached the debug log')
  }
})

test('a stale lock (mtime 60 s ago) is broken at once', async () => {
  const { mock, qwenHome, lockPath, env } = await setup()
  fs.writeFileSync(lockPath, crypto.randomUUID(), { mode: 0o600 })
  const old = new Date(Date.now() - 60_000)
  fs.utimesSync(lockPath, old, old)

  const waiter = child(['get'], { ...env, QWEN_OAUTH_DEBUG: '1' })
  assert.equal(await waiter.nextLine(), 'ready')
  const r = JSON.parse(await waiter.nextLine())
  assert.ok(r.ok, `failed: ${r.code} ${r.message}`)
  assert.equal(mock.refreshGrants, 1)
  assert.equal(r.tokenSha, sha(mock.tokens.at(-1).access_token))
  assert.match(waiter.stderr(), /broke stale lock/)
  assert.doesNotMatch(waiter.stderr(), /waiting/, 'a stale lock must not be waited for')
  assert.deepEqual(dirEntries(qwenHome), ['oauth_creds.json'], 'stale lock and its renamed copy are gone')
})

test('a 30 s old lock is respected; the waiter then adopts the owner\'s refreshed token without refreshing', async () => {
  const { mock, qwenHome, lockPath, seed, env } = await setup()
  // 30 s old: younger than the CLI's 35 s, so it must be respected.
  fs.writeFileSync(lockPath, 'cli-owner', { mode: 0o600 })
  const young = new Date(Date.now() - 30_000)
  fs.utimesSync(lockPath, young, young)
  const waiter = child(['get'], { ...env, QWEN_OAUTH_DEBUG: '1' })
  assert.equal(await waiter.nextLine(), 'ready')
  await waiter.waitForStderr(/waiting/)
  assert.equal(fs.readFileSync(lockPath, 'utf8'), 'cli-owner')
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 0)
  // The owner finishes: it writes refreshed credentials (as the CLI would) and releases.
  const fresh = mock.issueTokens()
  const tmp = path.join(qwenHome, 'x.tmp')
  fs.writeFileSync(tmp, JSON.stringify(pick(fresh, REFRESH_KEYS), null, 2), { mode: 0o600 })
  fs.renameSync(tmp, path.join(qwenHome, 'oauth_creds.json'))
  fs.unlinkSync(lockPath)
  const r = JSON.parse(await waiter.nextLine())
  assert.ok(r.ok, `failed: ${r.code} ${r.message}`)
  // It re-read the file under the lock and adopted the owner's token: no refresh of its own.
  assert.equal(r.tokenSha, sha(fresh.access_token))
  assert.equal(mock.requestsTo(TOKEN_PATH).length, 0)
  assert.ok(r.tokenSha !== sha(seed.access_token))
  assert.ok(!fs.existsSync(lockPath))
})
