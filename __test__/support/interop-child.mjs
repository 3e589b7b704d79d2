// Child processes of __test__/interop.test.mjs. Never prints a token: only SHA-256 digests.
//
//   node interop-child.mjs cli <calls>      the official Qwen Code CLI's own token manager
//   node interop-child.mjs ours <calls>     this package (api.cjs)
//       env QWEN_HOME, MOCK_URL (the mock Qwen server). Prints `ready`, waits for `go` on stdin, then calls
//       getValidCredentials <calls> times (every 4th one forced), a random 0–15 ms apart, and prints one
//       JSON line {calls, errors: [{code|type, message}], last: {tokenSha, refreshSha}}.
//       Then waits for stdin to close.
//   node interop-child.mjs cli-login       the CLI's own start-up path (getQwenOAuthClient): no credentials,
//                                          so its device flow runs against the mock and saves the file
//   node interop-child.mjs cli-get         the CLI's getValidCredentials once
//       env QWEN_HOME, MOCK_URL. Print one JSON line {ok, tokenSha, refreshSha} or {ok:false, type, message}.
//   node interop-child.mjs watch <file>
//       env QWEN_OAUTH_STAT_INTERVAL_MS=0 (set at spawn). Reads <file> as fast as it can until a `stop` line;
//       each new content is validated by the CLI's own code (SharedTokenManager.reloadCredentialsFromFile,
//       which runs its validateCredentials) and by this package's addon (loadCredentials), and must be
//       JSON.stringify(parsed, null, 2) byte for byte. Prints `ready` once reading, and at `stop` one JSON
//       line {reads, versions, problems: [...]}.
//
// The CLI's OAuth host is the constant https://chat.qwen.ai; its bundle calls the global fetch, so `cli`
// installs a fetch that sends those calls to MOCK_URL instead and refuses every other non-loopback URL.
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import readline from 'node:readline'
import { createRequire } from 'node:module'
import { fileURLToPath, pathToFileURL } from 'node:url'

const require = createRequire(import.meta.url)
const sha = (s) => crypto.createHash('sha256').update(String(s)).digest('hex')
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const CLI_HOST = 'https://chat.qwen.ai'

const lines = readline.createInterface({ input: process.stdin })
const queued = []
const waiting = []
lines.on('line', (l) => (waiting.length ? waiting.shift()(l.trim()) : queued.push(l.trim())))
lines.on('close', () => {
  for (const w of waiting.splice(0)) w(null)
  queued.push(null)
})
const nextLine = () => (queued.length ? Promise.resolve(queued.shift()) : new Promise((r) => waiting.push(r)))
const pause = (ms) => new Promise((r) => setTimeout(r, ms))

/** The bundle chunk that defines SharedTokenManager and QwenOAuth2Client (its file name carries a hash). */
async function loadCliTokenModule() {
  const dir = path.join(ROOT, 'node_modules', '@qwen-code', 'qwen-code', 'chunks')
  const hits = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.js'))
    .filter((f) => {
      const text = fs.readFileSync(path.join(dir, f), 'utf8')
      return text.includes('var SharedTokenManager = class') && text.includes('var QwenOAuth2Client = class')
    })
  if (hits.length !== 1) throw new Error(`expected one chunk with SharedTokenManager in ${dir}, found ${hits.length}`)
  return import(pathToFileURL(path.join(dir, hits[0])).href)
}

function redirectCliFetch(mockUrl) {
  const realFetch = globalThis.fetch
  globalThis.fetch = (input, init) => {
    const url = input instanceof Request ? input.url : String(input)
    let target
    if (url === CLI_HOST || url.startsWith(CLI_HOST + '/')) target = mockUrl + url.slice(CLI_HOST.length)
    else if (/^http:\/\/127\.0\.0\.1[:/]/.test(url)) target = url
    else return Promise.reject(new Error(`interop test: refusing to fetch ${url}`))
    return realFetch(input instanceof Request ? new Request(target, input) : target, init)
  }
}

const [mode, arg] = process.argv.slice(2)

if (mode === 'cli' || mode === 'ours') {
  const calls = Number(arg)
  let get
  if (mode === 'cli') {
    redirectCliFetch(process.env.MOCK_URL)
    const { SharedTokenManager, QwenOAuth2Client } = await loadCliTokenModule()
    const client = new QwenOAuth2Client()
    const manager = SharedTokenManager.getInstance()
    get = async (force) => {
      const c = await manager.getValidCredentials(client, force)
      return { accessToken: c.access_token, refreshToken: c.refresh_token }
    }
  } else {
    const api = require(path.join(ROOT, 'api.cjs'))
    get = (force) => api.getValidCredentials({}, { force })
  }
  process.stdout.write('ready\n')
  if ((await nextLine()) !== 'go') process.exit(2)
  const errors = []
  let last = null
  for (let i = 0; i < calls; i++) {
    try {
      const c = await get(i % 4 === 3)
      last = { tokenSha: sha(c.accessToken), refreshSha: sha(c.refreshToken) }
    } catch (err) {
      errors.push({ code: err?.code, type: err?.type, message: String(err?.message ?? err) })
    }
    await pause(crypto.randomInt(16))
  }
  process.stdout.write(JSON.stringify({ calls, errors, last }) + '\n')
  // Stay until the test lets go: the CLI's exit handler unlinks oauth_creds.lock whoever owns it.
  while ((await nextLine()) !== null);
} else if (mode === 'cli-login' || mode === 'cli-get') {
  redirectCliFetch(process.env.MOCK_URL)
  const { SharedTokenManager, QwenOAuth2Client, getQwenOAuthClient } = await loadCliTokenModule()
  let out
  try {
    let c
    if (mode === 'cli-login') {
      const config = { isBrowserLaunchSuppressed: () => true, isInteractive: () => false }
      c = (await getQwenOAuthClient(config)).getCredentials()
    } else {
      c = await SharedTokenManager.getInstance().getValidCredentials(new QwenOAuth2Client(), false)
    }
    out = { ok: true, tokenSha: sha(c.access_token), refreshSha: sha(c.refresh_token) }
  } catch (err) {
    out = { ok: false, type: err?.type, message: String(err?.message ?? err) }
  }
  lines.close() // nothing more to read; let the process end
  process.stdin.destroy()
  process.stdout.write(JSON.stringify(out) + '\n')
} else if (mode === 'watch') {
  const file = arg
  const api = require(path.join(ROOT, 'api.cjs'))
  const { SharedTokenManager } = await loadCliTokenModule()
  // A bare instance: the CLI's methods without its constructor (which would install exit handlers that
  // delete the shared lock file).
  const side = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-interop-watch-'))
  const sideFile = path.join(side, 'oauth_creds.json')
  const cli = Object.create(SharedTokenManager.prototype)
  cli.memoryCache = { credentials: null, fileModTime: 0, lastCheck: 0 }
  cli.getCredentialFilePath = () => sideFile

  const state = { reads: 0, versions: 0, problems: [] }
  const seen = new Set()
  let stop = false
  nextLine().then(() => (stop = true))
  process.stdout.write('ready\n')
  while (!stop) {
    let bytes = null
    try {
      bytes = fs.readFileSync(file)
    } catch (err) {
      state.problems.push(`read: ${err.code ?? err.message}`)
    }
    state.reads++
    const digest = bytes && sha(bytes)
    if (bytes && !seen.has(digest)) {
      seen.add(digest)
      state.versions++
      const text = bytes.toString('utf8')
      let parsed = null
      try {
        parsed = JSON.parse(text)
      } catch {
        state.problems.push('not JSON')
      }
      if (parsed && JSON.stringify(parsed, null, 2) !== text) state.problems.push('not JSON.stringify(creds, null, 2)')
      // Replaced by rename, so the addon's change check (mtime, size, inode) always sees a new version.
      fs.writeFileSync(sideFile + '.next', bytes, { mode: 0o600 })
      fs.renameSync(sideFile + '.next', sideFile)
      cli.memoryCache.credentials = null
      await cli.reloadCredentialsFromFile(null)
      const byCli = cli.memoryCache.credentials
      if (!byCli) state.problems.push('the CLI rejects a version of the file')
      try {
        const ours = api.loadCredentials({ qwenHome: side })
        if (!ours || !byCli || ours.accessToken !== byCli.access_token || ours.refreshToken !== byCli.refresh_token)
          state.problems.push('the addon reads a version of the file differently from the CLI')
      } catch (err) {
        state.problems.push(`the addon rejects a version of the file: ${err.code}`)
      }
    }
    await new Promise((r) => setImmediate(r))
  }
  fs.rmSync(side, { recursive: true, force: true })
  process.stdout.write(JSON.stringify(state) + '\n')
} else {
  process.stderr.write(`unknown mode ${mode}\n`)
  process.exit(2)
}
