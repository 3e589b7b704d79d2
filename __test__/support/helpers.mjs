// Small helpers shared by the test files: waits on conditions, error capture, file snapshots, and the
// CLI's credential key orders. Nothing here sleeps as synchronisation: `until` polls a condition.
import { afterEach } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import api from '../../api.cjs'

/** Key order of oauth_creds.json as the Qwen Code CLI writes it after a device login / after a refresh. */
export const DEVICE_KEYS = ['access_token', 'refresh_token', 'token_type', 'resource_url', 'expiry_date']
export const REFRESH_KEYS = ['access_token', 'token_type', 'refresh_token', 'resource_url', 'expiry_date']

/** Digest of a token, so tests and children can compare tokens without printing them. */
export const sha = (s) => crypto.createHash('sha256').update(String(s)).digest('hex')

/** Cleanup callbacks run (last first) after each test of the calling file. */
export function cleanupsAfterEach() {
  const cleanups = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()()
  })
  return cleanups
}

/** The error a promise rejects with; fails the test when it resolves. */
export async function rejection(p, expected = 'expected a rejection') {
  try {
    await p
  } catch (err) {
    return err
  }
  assert.fail(expected)
}

/** The error a function throws; fails the test when it returns. */
export function throws(fn) {
  try {
    fn()
  } catch (err) {
    return err
  }
  assert.fail('expected an error')
}

/**
 * Remove a test's temp dir once this process's request counts have landed in it: with pacing off they are
 * written by a background thread (src/quota.rs), which could otherwise add a file while the dir is removed.
 */
export function removeTempDir(dir) {
  api.flushQuota()
  fs.rmSync(dir, { recursive: true, force: true })
}

/** Poll `fn` (sync or async) until it returns a truthy value, which is returned; fail after `timeoutMs`. */
export async function until(fn, what, timeoutMs = 5000, pollMs = 10) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, pollMs))
  }
}

export const snapshot = (file) => ({ bytes: fs.readFileSync(file), mtimeMs: fs.statSync(file).mtimeMs })

/** The file has the same bytes and was not rewritten since `before` (a snapshot). */
export function assertUntouched(file, before) {
  const now = snapshot(file)
  assert.ok(now.bytes.equals(before.bytes), `${file} changed`)
  assert.equal(now.mtimeMs, before.mtimeMs, `${file} was rewritten`)
}

/** The Qwen Code CLI's validateCredentials on a file's text: the reason it would reject it, or null. */
export function cliInvalid(text) {
  let o
  try {
    o = JSON.parse(text)
  } catch {
    return 'not JSON'
  }
  if (!o || typeof o !== 'object') return 'not an object'
  for (const k of ['access_token', 'refresh_token', 'token_type']) if (!o[k] || typeof o[k] !== 'string') return `bad ${k}`
  if (!o.expiry_date || typeof o.expiry_date !== 'number') return 'bad expiry_date'
  return null
}
