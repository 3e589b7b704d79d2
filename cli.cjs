#!/usr/bin/env node
'use strict'
// `npx opencode-qwen-oauth login | status | logout`: the Qwen login outside OpenCode, over the same native
// core as the plugin (./api.cjs). Works without OpenCode installed; never prints a token.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')
const { spawn } = require('node:child_process')

const PROVIDER_ID = 'qwen-code'
const EXIT = { ok: 0, error: 1, usage: 2, cancelled: 130 }

const USAGE = `Usage: opencode-qwen-oauth <command> [options]

Commands:
  login    Sign in to Qwen (qwen.ai device login): shows a link and a code, saves the
           login to <qwen home>/oauth_creds.json, shared with the Qwen Code CLI
  status   Who is logged in: API base, token expiry, the credentials file; and the
           local quota view (requests this minute / today from this machine, last 429)
  logout   Remove the Qwen entry from OpenCode's auth.json; with --shared also delete
           oauth_creds.json (this logs the Qwen Code CLI out too)

Options:
  --qwen-home <dir>        directory of oauth_creds.json (env QWEN_HOME, default ~/.qwen)
  --oauth-base-url <url>   OAuth server (env QWEN_OAUTH_BASE_URL, default https://chat.qwen.ai)
  --no-browser             login: only print the link (env QWEN_OAUTH_NO_BROWSER=1)
  --shared, --all          logout: also delete the shared oauth_creds.json
  --json                   status: print JSON (no tokens either)
  -h, --help               show this help
  -v, --version            show the version

Exit codes: 0 ok, 1 error (message and code on stderr), 2 usage, 130 login cancelled (Ctrl-C).
`

/** Which flags each command takes (the global ones always). */
const COMMAND_FLAGS = { login: ['--no-browser'], status: ['--json'], logout: ['--shared', '--all'] }
const VALUE_FLAGS = { '--qwen-home': 'qwenHome', '--oauth-base-url': 'oauthBaseUrl' }

class UsageError extends Error {}

function parseArgs(argv) {
  const out = { command: null, options: {}, flags: new Set() }
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]
    if (arg === '-h' || arg === '--help') out.flags.add('--help')
    else if (arg === '-v' || arg === '--version') out.flags.add('--version')
    else if (arg.startsWith('--')) {
      let value
      const eq = arg.indexOf('=')
      if (eq > 0) [arg, value] = [arg.slice(0, eq), arg.slice(eq + 1)]
      if (VALUE_FLAGS[arg]) {
        if (value === undefined) {
          value = argv[++i]
          if (value === undefined || value.startsWith('--')) throw new UsageError(`${arg} needs a value`)
        }
        if (!value) throw new UsageError(`${arg} needs a value`)
        out.options[VALUE_FLAGS[arg]] = value
      } else if (value !== undefined) {
        throw new UsageError(`${arg} takes no value`)
      } else {
        out.flags.add(arg)
      }
    } else if (arg.startsWith('-') && arg !== '-') {
      throw new UsageError(`unknown option ${arg}`)
    } else if (out.command === null) {
      out.command = arg
    } else {
      throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`)
    }
  }
  if (out.flags.has('--help') || out.flags.has('--version')) return out
  if (out.command === null) throw new UsageError('no command given')
  const allowed = COMMAND_FLAGS[out.command]
  if (!allowed) throw new UsageError(`unknown command ${JSON.stringify(out.command)}`)
  for (const f of out.flags) {
    if (!allowed.includes(f)) {
      const owner = Object.keys(COMMAND_FLAGS).find((c) => COMMAND_FLAGS[c].includes(f))
      throw new UsageError(owner ? `${f} is an option of ${owner}` : `unknown option ${f}`)
    }
  }
  return out
}

async function main(argv) {
  let args
  try {
    args = parseArgs(argv)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`opencode-qwen-oauth: ${err.message}\nRun opencode-qwen-oauth --help for the commands and options.\n`)
    return EXIT.usage
  }
  if (args.flags.has('--help')) {
    process.stdout.write(USAGE)
    return EXIT.ok
  }
  if (args.flags.has('--version')) {
    process.stdout.write(`${require('./package.json').version}\n`)
    return EXIT.ok
  }
  try {
    // Loaded only now: --help and --version work even without a native addon for this platform.
    const api = require('./api.cjs')
    if (args.command === 'login') return await login(api, args)
    if (args.command === 'status') return await status(api, args)
    return await logout(api, args)
  } catch (err) {
    printError(err)
    return EXIT.error
  }
}

function printError(err) {
  const code = err?.code ? ` [${err.code}]` : ''
  process.stderr.write(`opencode-qwen-oauth: error${code}: ${err?.message ?? err}\n`)
}

// ─── login ────────────────────────────────────────────────────────────────────────────────────────

// What Qwen did to the OAuth tier: status and login have no server answer to go by, so they say what is known
// (the texts come from the addon, as its error messages do).
function oauthServiceNote(api) {
  const login = api.loginMethods()
  return [login.oauthServiceNote, `An API key works: ${login.apiKeyLoginChoice}`]
}

async function login(api, { options, flags }) {
  const session = await api.startLogin(options)
  const out = process.stdout
  out.write(
    `To sign in to Qwen, open this link in a browser:\n\n  ${session.verificationUriComplete}\n\n` +
      `and check that the page shows the code ${session.userCode} ` +
      `(or enter the code at ${session.verificationUri}).\n\n`,
  )
  if (!flags.has('--no-browser')) openBrowser(session.verificationUriComplete)

  const deadline = Date.now() + session.expiresIn * 1000
  const tty = Boolean(out.isTTY)
  let ticker = null
  if (tty) {
    // One line, rewritten every second.
    const draw = () => {
      const left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000))
      const mmss = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')}`
      out.write(`\r\x1b[2KWaiting for approval… the code expires in ${mmss} (Ctrl-C cancels)`)
    }
    draw()
    ticker = setInterval(draw, 1000)
  } else {
    out.write(
      `Waiting for approval; the code expires in ${formatDuration(session.expiresIn * 1000)}, ` +
        `at ${localTime(deadline)}.\n`,
    )
  }

  // Ctrl-C: cancel the login cleanly (the native poll stops at once); a second Ctrl-C quits outright.
  let cancelled = false
  const onSignal = () => {
    if (cancelled) process.exit(EXIT.cancelled)
    cancelled = true
    session.cancel()
  }
  process.on('SIGINT', onSignal)
  let creds
  try {
    creds = await session.wait()
  } catch (err) {
    if (cancelled && err?.code === 'E_OAUTH_CANCELLED') {
      if (tty) out.write('\r\x1b[2K')
      process.stderr.write('Login cancelled; nothing was saved.\n')
      return EXIT.cancelled
    }
    if (tty) out.write('\n')
    throw err
  } finally {
    clearInterval(ticker)
    process.removeListener('SIGINT', onSignal)
  }
  if (tty) out.write('\r\x1b[2K')
  const file = api.qwenPaths(options).credentials
  out.write(
    `Logged in. Credentials saved to ${file}${modeNote(file)}, shared with the Qwen Code CLI.\n` +
      `API base ${creds.apiBaseUrl}; the access token expires ${relative(creds.expiryDate)} and is renewed automatically.\n` +
      `OpenCode with the opencode-qwen-oauth plugin uses this login from its next start.\n` +
      `Note: ${oauthServiceNote(api).join('\n')}\n`,
  )
  return EXIT.ok
}

/** Best effort, never fails: the link is printed anyway. The URL is an argument, never shell text. */
function openBrowser(url) {
  if (process.env.QWEN_OAUTH_NO_BROWSER) return
  let cmd
  let args
  if (process.platform === 'darwin') [cmd, args] = ['open', [url]]
  else if (process.platform === 'win32') [cmd, args] = ['rundll32', ['url.dll,FileProtocolHandler', url]]
  else {
    if (!process.env.DISPLAY && !process.env.WAYLAND_DISPLAY) return
    ;[cmd, args] = ['xdg-open', [url]]
  }
  try {
    const child = spawn(cmd, args, { stdio: 'ignore', detached: true, shell: false })
    child.on('error', () => {})
    child.unref()
  } catch {
    // No opener: the user opens the printed link.
  }
}

// ─── status ───────────────────────────────────────────────────────────────────────────────────────

async function status(api, { options, flags }) {
  const paths = api.qwenPaths(options)
  let creds = null
  let credsError = null
  try {
    creds = api.loadCredentials(options)
  } catch (err) {
    credsError = err
  }
  const quota = api.quotaStatus(options)
  const opencode = readOpenCodeEntry()
  const now = Date.now()

  if (flags.has('--json')) {
    const report = {
      loggedIn: Boolean(creds),
      credentials: {
        path: paths.credentials,
        mode: fileMode(paths.credentials),
        ...(creds && {
          apiBaseUrl: creds.apiBaseUrl,
          resourceUrl: creds.resourceUrl ?? null,
          expiryDate: creds.expiryDate,
          valid: now < creds.expiryDate - 30_000,
          refreshable: Boolean(creds.refreshToken),
          accessTokenSha256: fingerprint(creds.accessToken),
        }),
        ...(credsError && { error: { code: credsError.code ?? null, message: credsError.message } }),
      },
      opencode,
      quota,
    }
    process.stdout.write(JSON.stringify(report, null, 2) + '\n')
    return credsError ? EXIT.error : EXIT.ok
  }

  const lines = []
  if (creds) {
    const valid = now < creds.expiryDate - 30_000
    lines.push('Qwen OAuth login: logged in (shared with the Qwen Code CLI)')
    lines.push(`  file         ${paths.credentials}${modeNote(paths.credentials)}`)
    lines.push(`  API base     ${creds.apiBaseUrl}${creds.resourceUrl ? ` (resource_url ${creds.resourceUrl})` : ''}`)
    lines.push(
      `  token        ${valid ? 'valid' : 'expired'}, ${valid ? 'expires' : 'expired'} ${relative(creds.expiryDate, now)}` +
        ` (${localTime(creds.expiryDate)}); sha256 ${fingerprint(creds.accessToken)}`,
    )
    lines.push(
      `  refresh      ${creds.refreshToken ? 'refresh token present: the access token is renewed automatically' : 'no refresh token: log in again when it expires'}`,
    )
    // Nothing here asks the server (status is offline), so this is what is known, said where the login is shown;
    // left out when OpenCode already uses an API key.
    if (opencode.entry?.type !== 'api') {
      lines.push(...oauthServiceNote(api).map((line, i) => (i ? ' '.repeat(15) : '  service      ') + line))
    }
  } else if (credsError) {
    lines.push(`Qwen OAuth login: unusable [${credsError.code ?? 'error'}]: ${credsError.message}`)
  } else {
    lines.push(`Qwen OAuth login: not logged in (no ${paths.credentials}). Run: npx opencode-qwen-oauth login`)
  }

  if (opencode.error) lines.push(`OpenCode: ${opencode.path} could not be read: ${opencode.error}`)
  else if (!opencode.entry) lines.push(`OpenCode: no "${PROVIDER_ID}" entry in ${opencode.path}`)
  else lines.push(`OpenCode: "${PROVIDER_ID}" entry (${describeEntry(opencode.entry)}) in ${opencode.path}`)
  if (opencode.fromEnv) lines.push('  (OPENCODE_AUTH_CONTENT is set: OpenCode reads that instead of the file)')

  lines.push('Quota view (requests sent from this machine, all processes; counted locally):')
  lines.push(`  this minute  ${quota.minute}`)
  const pct = quota.dailyLimit > 0 ? ` (${Math.floor((quota.today / quota.dailyLimit) * 100)} %)` : ''
  lines.push(
    `  today        ${quota.today} of ${quota.dailyLimit}${pct}; resets at 00:00 Beijing time, ` +
      `${relative(quota.dayResetsAt, now)} (${localTime(quota.dayResetsAt)})`,
  )
  if (quota.last429) {
    const l = quota.last429
    const why = l.reason === 'quota' ? 'daily quota used up' : 'rate limit'
    const wait = l.retryAfterMs != null ? `; the server asked to wait ${formatDuration(l.retryAfterMs)}` : ''
    lines.push(`  last 429     ${why}, ${relative(l.at, now)} (${localTime(l.at)})${wait}`)
  } else {
    lines.push('  last 429     none')
  }
  process.stdout.write(lines.join('\n') + '\n')
  return credsError ? EXIT.error : EXIT.ok
}

function describeEntry(entry) {
  if (entry.type === 'oauth') return 'Qwen OAuth'
  if (entry.type === 'api') {
    const endpoint = entry.metadata?.endpoint
    return `API key${endpoint ? ` for ${endpoint}` : ''}`
  }
  return String(entry.type ?? 'unknown type')
}

/** Short SHA-256 of a token: enough to compare two logins, useless to anyone who sees it. */
function fingerprint(token) {
  return crypto.createHash('sha256').update(String(token)).digest('hex').slice(0, 12)
}

// ─── logout ───────────────────────────────────────────────────────────────────────────────────────

async function logout(api, { options, flags }) {
  const shared = flags.has('--shared') || flags.has('--all')
  const auth = openCodeAuthPath()
  const removed = removeOpenCodeEntry(auth)
  if (removed) process.stdout.write(`Removed the "${PROVIDER_ID}" entry (${describeEntry(removed)}) from ${auth}.\n`)
  else process.stdout.write(`OpenCode has no "${PROVIDER_ID}" entry in ${auth}.\n`)
  if (process.env.OPENCODE_AUTH_CONTENT) {
    process.stdout.write('Note: OPENCODE_AUTH_CONTENT is set; OpenCode reads that instead of the file.\n')
  }

  const file = api.qwenPaths(options).credentials
  if (shared) {
    const had = await api.removeCredentials(options)
    process.stdout.write(had ? `Deleted ${file} (the Qwen Code CLI is logged out too).\n` : `There was no ${file}.\n`)
  } else if (fs.existsSync(file)) {
    process.stdout.write(
      `Kept the shared login ${file} (the Qwen Code CLI uses it, and OpenCode takes it up again at its next ` +
        `start). To delete it as well: opencode-qwen-oauth logout --shared\n`,
    )
  }
  return EXIT.ok
}

function openCodeAuthPath() {
  const data = process.env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share')
  return path.join(data, 'opencode', 'auth.json')
}

/** OpenCode's stored auth for our provider (type and metadata only), as OpenCode would read it. */
function readOpenCodeEntry() {
  const file = openCodeAuthPath()
  const fromEnv = Boolean(process.env.OPENCODE_AUTH_CONTENT)
  let text
  try {
    text = fromEnv ? process.env.OPENCODE_AUTH_CONTENT : fs.readFileSync(file, 'utf8')
  } catch (err) {
    if (err.code === 'ENOENT') return { path: file, fromEnv, entry: null }
    return { path: file, fromEnv, entry: null, error: err.message }
  }
  try {
    const entry = JSON.parse(text)?.[PROVIDER_ID]
    if (!entry || typeof entry !== 'object') return { path: file, fromEnv, entry: null }
    // Never the secrets: only what says which kind of login it is.
    const safe = { type: entry.type ?? null }
    if (entry.metadata?.endpoint) safe.metadata = { endpoint: entry.metadata.endpoint }
    if (typeof entry.expires === 'number') safe.expires = entry.expires
    return { path: file, fromEnv, entry: safe }
  } catch {
    return { path: file, fromEnv, entry: null, error: 'not valid JSON' }
  }
}

/**
 * Delete our entry from auth.json, keeping every other provider: written to a 0600 temp file beside it,
 * flushed, then renamed over it, so OpenCode never reads half a file. Returns the removed entry or null.
 */
function removeOpenCodeEntry(file) {
  let text
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    if (err.code === 'ENOENT') return null
    throw Object.assign(new Error(`Cannot read ${file}: ${err.message}`), { code: 'E_IO' })
  }
  let data
  try {
    data = JSON.parse(text)
  } catch {
    throw Object.assign(
      new Error(`${file} is not valid JSON; left as it is. Fix or remove it, then run logout again.`),
      { code: 'E_IO' },
    )
  }
  if (!data || typeof data !== 'object' || Array.isArray(data) || !(PROVIDER_ID in data)) return null
  const removed = data[PROVIDER_ID]
  delete data[PROVIDER_ID]
  const tmp = path.join(path.dirname(file), `.auth.json.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`)
  try {
    const fd = fs.openSync(tmp, 'wx', 0o600)
    try {
      fs.writeFileSync(fd, JSON.stringify(data, null, 2))
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
    fs.renameSync(tmp, file)
  } catch (err) {
    try {
      fs.unlinkSync(tmp)
    } catch {}
    throw Object.assign(new Error(`Cannot rewrite ${file}: ${err.message}; it was left unchanged.`), { code: 'E_IO' })
  }
  return removed && typeof removed === 'object' ? removed : { type: null }
}

// ─── formatting ───────────────────────────────────────────────────────────────────────────────────

function fileMode(file) {
  try {
    return (fs.statSync(file).mode & 0o777).toString(8).padStart(4, '0')
  } catch {
    return null
  }
}

function modeNote(file) {
  if (process.platform === 'win32') return ''
  const mode = fileMode(file)
  if (!mode) return ''
  // The file holds tokens: the CLI and this plugin write it 0600, but an older copy or a restore may not have.
  if (!(parseInt(mode, 8) & 0o077)) return ` (mode ${mode})`
  const arg = /^[\w./-]+$/.test(file) ? file : `'${file.replace(/'/g, `'\\''`)}'`
  return ` (mode ${mode}: other users have access to your tokens; run chmod 600 ${arg})`
}

/** `3 h 5 min`, `42 s`, `2 d 1 h`. */
function formatDuration(ms) {
  const s = Math.round(Math.abs(ms) / 1000)
  if (s < 60) return `${s} s`
  const min = Math.floor(s / 60)
  if (min < 60) return `${min} min`
  const h = Math.floor(min / 60)
  if (h < 48) return `${h} h${min % 60 ? ` ${min % 60} min` : ''}`
  return `${Math.floor(h / 24)} d${h % 24 ? ` ${h % 24} h` : ''}`
}

function relative(at, now = Date.now()) {
  return at >= now ? `in ${formatDuration(at - now)}` : `${formatDuration(now - at)} ago`
}

/** `2026-05-01 14:03:22 +02:00`, in the local time zone. */
function localTime(ms) {
  const d = new Date(ms)
  const p = (n) => String(n).padStart(2, '0')
  const off = -d.getTimezoneOffset()
  const sign = off >= 0 ? '+' : '-'
  return (
    `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())} ` +
    `${sign}${p(Math.floor(Math.abs(off) / 60))}:${p(Math.abs(off) % 60)}`
  )
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code
    },
    (err) => {
      printError(err)
      process.exitCode = EXIT.error
    },
  )
}

module.exports = { parseArgs, formatDuration, localTime }
