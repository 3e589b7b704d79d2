// Child process of __test__/crash.test.mjs: refreshes and saves the credentials in a loop until it is
// killed. Never prints a token, only SHA-256 digests.
//
//   node crash-child.mjs      env QWEN_HOME, QWEN_OAUTH_BASE_URL
//     1. loadCredentials() (the file as the addon validates it) and one forced refresh (lock + refresh +
//        save: proves this process got past whatever the previous one left behind);
//     2. prints one JSON line {"load": {...}, "first": {...}} where each is {"ok":true,"tokenSha","refreshSha"}
//        or {"ok":false,"code","message"};
//     3. if both succeeded: forced refreshes back to back, forever. An error there prints one JSON line
//        {"loopError": {...}} and exits 1.
import crypto from 'node:crypto'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const api = require('../../api.cjs')
const sha = (s) => crypto.createHash('sha256').update(String(s)).digest('hex')
const digest = (c) => (c ? { ok: true, tokenSha: sha(c.accessToken), refreshSha: sha(c.refreshToken) } : { ok: true, none: true })
const failure = (err) => ({ ok: false, code: err?.code, message: String(err?.message ?? err) })

let load
try {
  load = digest(api.loadCredentials({}))
} catch (err) {
  load = failure(err)
}
let first
try {
  first = digest(await api.getValidCredentials({}, { force: true }))
} catch (err) {
  first = failure(err)
}
process.stdout.write(JSON.stringify({ load, first }) + '\n')
if (!load.ok || !first.ok) process.exit(0)

for (;;) {
  try {
    await api.getValidCredentials({}, { force: true })
  } catch (err) {
    process.stdout.write(JSON.stringify({ loopError: failure(err) }) + '\n')
    process.exit(1)
  }
}
