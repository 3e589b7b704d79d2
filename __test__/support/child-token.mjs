// Child process for the multi-process credential tests. Never prints a token: only SHA-256 digests.
//
//   node child-token.mjs get [--wait-go]
//       env QWEN_HOME, QWEN_OAUTH_BASE_URL (and optionally QWEN_OAUTH_DEBUG=1).
//       Loads the addon, prints `ready`; with --wait-go waits for a `go` line on stdin; then calls
//       getValidCredentials() once and prints one JSON line:
//       {"ok":true,"tokenSha":"…","refreshSha":"…","expiryDate":n} or {"ok":false,"code":"E_…","message":"…"}.
//   node child-token.mjs serve
//       Same env. Prints `ready`, then answers each stdin line (`load`, `get`, `get-force`) with one JSON
//       line: {"ok":true,"creds":null} or {"ok":true,"creds":{tokenSha,refreshSha,expiryDate,resourceUrl}}
//       or {"ok":false,"code","message"}. Set QWEN_OAUTH_STAT_INTERVAL_MS in its env at spawn time (Bun
//       does not pass process.env changes made at run time on to native code).
//   node child-token.mjs hold-lock <lockPath>
//       Creates the lock as the Qwen Code CLI does (O_EXCL, random UUID), prints `held`, waits for a line
//       on stdin, removes the lock (if still its own), prints `released <Date.now()>`, exits.
import crypto from 'node:crypto'
import fs from 'node:fs'
import readline from 'node:readline'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const sha = (s) => crypto.createHash('sha256').update(String(s)).digest('hex')

function nextLine() {
  const rl = readline.createInterface({ input: process.stdin })
  return new Promise((resolve) => {
    rl.once('line', (line) => {
      rl.close()
      resolve(line.trim())
    })
    rl.once('close', () => resolve(''))
  })
}

const [mode, arg] = process.argv.slice(2)

const digest = (c) =>
  c && { tokenSha: sha(c.accessToken), refreshSha: sha(c.refreshToken), expiryDate: c.expiryDate, resourceUrl: c.resourceUrl ?? null }

if (mode === 'serve') {
  const api = require('../../api.cjs')
  const rl = readline.createInterface({ input: process.stdin })
  process.stdout.write('ready\n')
  for await (const line of rl) {
    const cmd = line.trim()
    let out
    try {
      if (cmd === 'load') out = { ok: true, creds: digest(api.loadCredentials({})) }
      else if (cmd === 'get') out = { ok: true, creds: digest(await api.getValidCredentials({})) }
      else if (cmd === 'get-force') out = { ok: true, creds: digest(await api.getValidCredentials({}, { force: true })) }
      else out = { ok: false, code: 'E_TEST', message: `unknown command ${cmd}` }
    } catch (err) {
      out = { ok: false, code: err.code, message: err.message }
    }
    process.stdout.write(JSON.stringify(out) + '\n')
  }
} else if (mode === 'get') {
  const api = require('../../api.cjs')
  process.stdout.write('ready\n')
  if (process.argv.includes('--wait-go')) await nextLine()
  let out
  try {
    const c = await api.getValidCredentials({})
    out = { ok: true, tokenSha: sha(c.accessToken), refreshSha: sha(c.refreshToken), expiryDate: c.expiryDate }
  } catch (err) {
    out = { ok: false, code: err.code, message: err.message }
  }
  process.stdout.write(JSON.stringify(out) + '\n')
} else if (mode === 'hold-lock') {
  const id = crypto.randomUUID()
  fs.writeFileSync(arg, id, { flag: 'wx', mode: 0o600 })
  process.stdout.write('held\n')
  await nextLine()
  if (fs.readFileSync(arg, 'utf8') === id) fs.unlinkSync(arg)
  process.stdout.write(`released ${Date.now()}\n`)
} else {
  process.stderr.write(`unknown mode ${mode}\n`)
  process.exit(2)
}
