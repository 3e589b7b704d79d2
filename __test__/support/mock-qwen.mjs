// Mock Qwen server: chat.qwen.ai OAuth (device flow + PKCE, refresh) and portal.qwen.ai /v1 API,
// with the real servers' quirks, all on 127.0.0.1. Plain Node (node:http, no deps), ESM; also works under Bun.
//
// ─── API (stable; only additive changes) ─────────────────────────────────────────────────────────
//   import { startMockQwen, CLIENT_ID, SCOPE } from './support/mock-qwen.mjs'
//   const mock = await startMockQwen({ port: 0, config: { ...overrides }, onRequest })   // all optional
//               onRequest(rec): called when each answer has been sent (rec as in mock.requests)
//   mock.url    'http://127.0.0.1:PORT'  → use as oauthBaseUrl
//   mock.host   '127.0.0.1:PORT'         → default resource_url (bare host, like 'portal.qwen.ai').
//               The API accepts any resource_url form pointing here: 'http://127.0.0.1:PORT', with or without /v1.
//   mock.config plain mutable object, read on every request (defaults below)
//   mock.requests       every request: { method, path (pathname, as sent), url (raw, with query), headers
//                       (lowercased keys), rawBody (string), json (parsed body or null), at (Date.now() at arrival),
//                       hr (performance.now() at arrival), status (set when the answer starts) }
//   mock.requestsTo(path)                 requests whose pathname equals path (repeated slashes collapsed, so
//                                         '/v1/chat/completions' also matches '//v1/chat/completions')
//   await mock.waitForRequests(path, n, timeoutMs = 5000)  resolves with requestsTo(path) once n were seen
//   mock.disconnects                      count of connections the client closed before the answer ended
//   mock.disconnectLog                    [{ path, at, hr, chunksSent }]
//   await mock.waitForDisconnect(timeoutMs = 5000)  resolves with a disconnectLog entry. Every early close
//                                         satisfies exactly one waiter; closes not yet waited for count, so
//                                         calling it just after the close happened still resolves.
//   mock.refreshGrants / mock.deviceGrants  successful refresh / device-code grants (numbers)
//   mock.tokens                           issued pairs: [{ access_token, refresh_token, via: 'device'|'refresh'|'seed' }]
//   mock.issueTokens({ expiresInSec })    → { access_token, refresh_token, token_type, expiry_date (ms), resource_url }
//                                         pre-seeds a valid pair (expiresInSec may be <= 0 for an expired token)
//   mock.revokeRefreshToken(t)            refresh token t → invalid_grant from now on
//   mock.invalidateAccessTokens()         every access token issued so far → 401 from now on
//   mock.isValidAccessToken(t)            boolean
//   mock.approve(userCode?)               approve one pending device code (or all when omitted)
//   mock.deny(userCode?)                  deny one pending device code (or all)
//   mock.enqueue({ status = 200, headers = {}, body, delayMs = 0 })  next chat request gets this answer
//                                         (body: object → JSON, string → sent as is). Queue is FIFO and is consumed
//                                         only by requests that passed the auth/header checks.
//   mock.enqueue429({ retryAfter, retryAfterMs, body })   429 rate limit (Retry-After / retry-after-ms if given)
//   mock.enqueueQuota()                   429 insufficient_quota "Free allocated quota exceeded." (Qwen's body)
//   mock.enqueue401()                     401 invalid_api_key (as for an expired token)
//   mock.enqueue5xx(status = 500)
//   mock.enqueueStream({ chunks = ['Hel','lo'], intervalMs = 20, endless = false, cutAfter })  SSE answer made of
//                                         these content chunks; endless: repeats them until the client goes away;
//                                         cutAfter: n → destroys the socket after n chunks (mid-stream cut)
//   mock.enqueueToken({ status, headers, body, delayMs })  next /api/v1/oauth2/token request gets this answer
//                                         (whatever its grant), e.g. 500, 2xx with {error}, non-JSON
//   mock.enqueueDeviceCode({ status, headers, body, delayMs })  same for the next /api/v1/oauth2/device/code
//   mock.openConnections()                TCP connections open right now (a killed client's connection counts
//                                         until its close has been seen, i.e. after all its data was handled)
//   mock.reset()                          config back to the start values, scripted queues, requests, disconnect
//                                         log and counters emptied; issued tokens stay as they are
//   await mock.close()                    closes every connection (rejects pending waitFor* calls)
//   Server-side cuts (cutAfter) and mock.close() are not counted as client disconnects.
//   Also exported: CLIENT_ID, SCOPE, DEVICE_GRANT, DEFAULT_CONFIG.
//
// ─── order of checks ─────────────────────────────────────────────────────────────────────────────
//   chat:  auth (401) → refused headers (400) → body must be a JSON object (400) → rate limit (429)
//          → scripted queue → default answer (SSE when body.stream, else JSON; model echoed from body).
//   token: scripted queue → form content-type (400) → client_id (400 invalid_client) → grant_type.
//   device poll: unknown/used device_code (invalid_grant) → verifier (invalid_grant) → slowDownPolls (429)
//          → expired (expired_token) → denied → approved via approve()/page (success, skips pendingPolls)
//          → pendingPolls → deviceOutcome → autoApprove ? success : pending. A device code works once.
//
// ─── config defaults ─────────────────────────────────────────────────────────────────────────────
//   clientId 'f0304373b74a44d2b584a3fb70ca9e56', scope 'openid profile email model.completion'
//   autoApprove true            device codes are approved without a person (after pendingPolls)
//   deviceOutcome 'approve'     | 'deny' (400 access_denied) | 'expire' (400 expired_token)
//   pendingPolls 0              pending answers (HTTP 400 authorization_pending) before the outcome
//   slowDownPolls []            0-based poll indexes (per device code) answered 429 {"error":"slow_down"}
//   deviceExpiresInSec 600      expires_in of device codes (polls after that → expired_token)
//   tokenLifetimeSec 3600       expires_in of access tokens
//   resourceUrl null            resource_url in token answers (null → mock.host)
//   rotateRefreshToken true     refresh returns a new refresh token and the old one dies;
//                               false → the same refresh token is returned and stays valid
//   refreshOmit []              keys to leave out of refresh answers, e.g. ['refresh_token','resource_url']
//   refreshDelayMs 0            delay before a refresh answer (the grant itself is applied at once, so
//                               a second concurrent refresh with the same rotated token gets invalid_grant)
//   apiKeys []                  extra bearer values accepted by the API (API-key path)
//   replyText 'Hello from the mock Qwen server!'
//   chunkDelayMs 5              delay between default SSE chunks
//   chatDelayMs 0               delay before any default chat answer
//   rateLimitPerMinute null     N → 429 + Retry-After when a token makes more than N accepted requests per rolling minute
//   refuseHeaders ['x-session-affinity','openai-beta']  chat requests carrying one → 400 (Qwen refuses them)
//
// ─── CLI ─────────────────────────────────────────────────────────────────────────────────────────
//   node __test__/support/mock-qwen.mjs [--port N] [--manual] [--verbose]
//     → prints 'mock-qwen listening on http://127.0.0.1:PORT' on stdout.
//     --manual: no auto-approval; a person opens verification_uri_complete (GET /authorize) to approve.
//     --verbose: one line per request on stderr ('POST /v1/chat/completions 200'); never tokens or bodies.
//   Exits on SIGTERM/SIGINT.

import http from 'node:http'
import crypto from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { pathToFileURL } from 'node:url'

export const CLIENT_ID = 'f0304373b74a44d2b584a3fb70ca9e56'
export const SCOPE = 'openid profile email model.completion'
export const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code'

export const DEFAULT_CONFIG = Object.freeze({
  clientId: CLIENT_ID,
  scope: SCOPE,
  autoApprove: true,
  deviceOutcome: 'approve',
  pendingPolls: 0,
  slowDownPolls: [],
  deviceExpiresInSec: 600,
  tokenLifetimeSec: 3600,
  resourceUrl: null,
  rotateRefreshToken: true,
  refreshOmit: [],
  refreshDelayMs: 0,
  apiKeys: [],
  replyText: 'Hello from the mock Qwen server!',
  chunkDelayMs: 5,
  chatDelayMs: 0,
  rateLimitPerMinute: null,
  refuseHeaders: ['x-session-affinity', 'openai-beta'],
})

const rand = (n = 18) => crypto.randomBytes(n).toString('base64url')
const b64urlSha256 = (s) => crypto.createHash('sha256').update(s).digest('base64url')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const normPath = (p) => p.replace(/\/{2,}/g, '/')

function userCode() {
  const abc = 'BCDFGHJKLMNPQRSTVWXZ'
  const pick = () => abc[crypto.randomInt(abc.length)]
  let s = ''
  for (let i = 0; i < 8; i++) s += (i === 4 ? '-' : '') + pick()
  return s
}

const INVALID_KEY_BODY = {
  error: {
    message: 'invalid access token or token expired',
    type: 'invalid_request_error',
    code: 'invalid_api_key',
  },
}

export async function startMockQwen(opts = {}) {
  const startConfig = () => ({ ...structuredClone(DEFAULT_CONFIG), ...structuredClone(opts.config || {}) })
  const config = startConfig()
  const devices = new Map() // device_code → entry
  const accessTokens = new Map() // token → { expiresAt, revoked }
  const refreshTokens = new Map() // token → { revoked }
  const chatQueue = []
  const tokenQueue = []
  const deviceQueue = []
  const rateWindows = new Map() // bearer → [timestamps]
  const requestWaiters = new Set()
  const disconnectWaiters = []
  let disconnectsConsumed = 0
  const timers = new Set()
  let closing = false

  const mock = {
    url: '',
    host: '',
    config,
    requests: [],
    disconnects: 0,
    disconnectLog: [],
    refreshGrants: 0,
    deviceGrants: 0,
    tokens: [],
  }

  const resourceUrl = () => config.resourceUrl ?? mock.host

  function mintPair(lifetimeSec, via) {
    const access_token = `mock-access-${rand()}`
    const refresh_token = `mock-refresh-${rand()}`
    accessTokens.set(access_token, { expiresAt: Date.now() + lifetimeSec * 1000, revoked: false })
    refreshTokens.set(refresh_token, { revoked: false })
    mock.tokens.push({ access_token, refresh_token, via })
    return { access_token, refresh_token }
  }

  mock.isValidAccessToken = (t) => {
    const e = accessTokens.get(t)
    return !!e && !e.revoked && Date.now() < e.expiresAt
  }
  mock.issueTokens = ({ expiresInSec = config.tokenLifetimeSec } = {}) => {
    const pair = mintPair(expiresInSec, 'seed')
    return {
      ...pair,
      token_type: 'Bearer',
      expiry_date: Date.now() + expiresInSec * 1000,
      resource_url: resourceUrl(),
    }
  }
  mock.revokeRefreshToken = (t) => {
    const e = refreshTokens.get(t)
    if (e) e.revoked = true
    else refreshTokens.set(t, { revoked: true })
  }
  mock.invalidateAccessTokens = () => {
    for (const e of accessTokens.values()) e.revoked = true
  }

  const matchCode = (e, code) => code == null || e.userCode === String(code).toUpperCase()
  mock.approve = (code) => {
    let n = 0
    for (const e of devices.values()) if (!e.done && matchCode(e, code)) (e.approved = true), n++
    return n
  }
  mock.deny = (code) => {
    let n = 0
    for (const e of devices.values()) if (!e.done && matchCode(e, code)) (e.denied = true), n++
    return n
  }

  mock.enqueue = ({ status = 200, headers = {}, body, delayMs = 0 } = {}) => {
    chatQueue.push({ kind: 'plain', status, headers, body, delayMs })
  }
  mock.enqueue429 = ({ retryAfter, retryAfterMs, body } = {}) => {
    const headers = {}
    if (retryAfter != null) headers['retry-after'] = String(retryAfter)
    if (retryAfterMs != null) headers['retry-after-ms'] = String(retryAfterMs)
    mock.enqueue({
      status: 429,
      headers,
      body: body ?? {
        error: { message: 'Requests rate limit exceeded, please try again later.', type: 'rate_limit_error', code: 'rate_limit_exceeded' },
      },
    })
  }
  mock.enqueueQuota = () =>
    mock.enqueue({
      status: 429,
      body: {
        error: { code: 'insufficient_quota', message: 'Free allocated quota exceeded.', param: null, type: 'insufficient_quota' },
        request_id: crypto.randomUUID(),
      },
    })
  mock.enqueue401 = () => mock.enqueue({ status: 401, body: INVALID_KEY_BODY })
  mock.enqueue5xx = (status = 500) =>
    mock.enqueue({
      status,
      body: { error: { message: `mock upstream error ${status}`, type: 'server_error', code: 'internal_error' } },
    })
  mock.enqueueStream = ({ chunks = ['Hel', 'lo'], intervalMs = 20, endless = false, cutAfter } = {}) => {
    chatQueue.push({ kind: 'stream', chunks, intervalMs, endless, cutAfter })
  }
  mock.enqueueToken = ({ status = 200, headers = {}, body, delayMs = 0 } = {}) => {
    tokenQueue.push({ status, headers, body, delayMs })
  }
  mock.enqueueDeviceCode = ({ status = 200, headers = {}, body, delayMs = 0 } = {}) => {
    deviceQueue.push({ status, headers, body, delayMs })
  }

  mock.reset = () => {
    for (const k of Object.keys(config)) delete config[k]
    Object.assign(config, startConfig())
    chatQueue.length = 0
    tokenQueue.length = 0
    deviceQueue.length = 0
    rateWindows.clear()
    mock.requests.length = 0
    mock.disconnectLog.length = 0
    mock.disconnects = 0
    disconnectsConsumed = 0
    mock.refreshGrants = 0
    mock.deviceGrants = 0
  }

  mock.requestsTo = (path) => mock.requests.filter((r) => normPath(r.path) === normPath(path))

  mock.waitForRequests = (path, n, timeoutMs = 5000) => {
    const have = mock.requestsTo(path)
    if (have.length >= n) return Promise.resolve(have)
    return new Promise((resolve, reject) => {
      const w = {
        reject,
        check() {
          const got = mock.requestsTo(path)
          if (got.length < n) return
          requestWaiters.delete(w)
          clearTimeout(w.timer)
          resolve(got)
        },
      }
      w.timer = setTimeout(() => {
        requestWaiters.delete(w)
        reject(new Error(`mock-qwen: timed out after ${timeoutMs} ms waiting for ${n} request(s) to ${path} (saw ${mock.requestsTo(path).length})`))
      }, timeoutMs)
      requestWaiters.add(w)
    })
  }

  mock.waitForDisconnect = (timeoutMs = 5000) => {
    if (mock.disconnects > disconnectsConsumed) {
      return Promise.resolve(mock.disconnectLog[disconnectsConsumed++])
    }
    return new Promise((resolve, reject) => {
      const w = { resolve, reject }
      w.timer = setTimeout(() => {
        const i = disconnectWaiters.indexOf(w)
        if (i >= 0) disconnectWaiters.splice(i, 1)
        reject(new Error(`mock-qwen: no client disconnect within ${timeoutMs} ms`))
      }, timeoutMs)
      disconnectWaiters.push(w)
    })
  }

  function noteDisconnect(entry) {
    mock.disconnects++
    mock.disconnectLog.push(entry)
    const w = disconnectWaiters.shift()
    if (w) {
      clearTimeout(w.timer)
      w.resolve(mock.disconnectLog[disconnectsConsumed++])
    }
  }

  // ─── HTTP plumbing ────────────────────────────────────────────────────────────────────────────
  function send(res, rec, status, body, headers = {}) {
    if (res.destroyed || res.writableEnded) return
    const isString = typeof body === 'string'
    const payload = body === undefined ? '' : isString ? body : JSON.stringify(body)
    const h = { 'content-type': isString ? 'text/plain; charset=utf-8' : 'application/json', ...lower(headers) }
    h['content-length'] = Buffer.byteLength(payload)
    rec.status = status
    res.writeHead(status, h)
    res.end(payload)
  }
  const lower = (h) => Object.fromEntries(Object.entries(h || {}).map(([k, v]) => [k.toLowerCase(), v]))

  // Timers that die with the response or the server.
  function later(ms, res) {
    return new Promise((resolve) => {
      if (!ms || ms <= 0) return resolve(!res.destroyed && !res.writableEnded)
      const t = setTimeout(() => {
        timers.delete(t)
        resolve(!res.destroyed && !res.writableEnded)
      }, ms)
      timers.add(t)
    })
  }

  const server = http.createServer((req, res) => {
    const at = Date.now()
    const hr = performance.now()
    const chunks = []
    const rawUrl = req.url || '/'
    const qIdx = rawUrl.indexOf('?')
    const path = qIdx >= 0 ? rawUrl.slice(0, qIdx) : rawUrl
    const rec = {
      method: req.method,
      path,
      url: rawUrl,
      headers: { ...req.headers },
      rawBody: '',
      json: null,
      at,
      hr,
      status: undefined,
    }
    const state = { chunksSent: 0, serverCut: false }
    res.on('close', () => {
      if (!res.writableFinished && !state.serverCut && !closing) noteDisconnect({ path, at: Date.now(), hr: performance.now(), chunksSent: state.chunksSent })
    })
    req.on('data', (c) => chunks.push(c))
    req.on('error', () => {})
    res.on('error', () => {}) // a write racing a client abort must not crash the test process
    req.on('end', () => {
      rec.rawBody = Buffer.concat(chunks).toString('utf8')
      try {
        rec.json = rec.rawBody ? JSON.parse(rec.rawBody) : null
      } catch {
        rec.json = null
      }
      mock.requests.push(rec)
      if (opts.onRequest) res.on('finish', () => opts.onRequest(rec))
      for (const w of [...requestWaiters]) w.check()
      const q = new URLSearchParams(qIdx >= 0 ? rawUrl.slice(qIdx + 1) : '')
      route(req, res, rec, normPath(path), q, state).catch((err) => {
        send(res, rec, 500, { error: { message: `mock-qwen internal error: ${err && err.message}`, type: 'server_error' } })
      })
    })
  })

  async function route(req, res, rec, path, query, state) {
    const m = req.method
    if (m === 'POST' && path === '/api/v1/oauth2/device/code') {
      if (deviceQueue.length) return scriptedAnswer(res, rec, deviceQueue.shift())
      return deviceCode(req, res, rec)
    }
    if (m === 'POST' && path === '/api/v1/oauth2/token') return token(req, res, rec)
    if (m === 'GET' && path === '/authorize') return authorizePage(res, rec, query)
    if (m === 'POST' && (path === '/v1/chat/completions' || path === '/chat/completions')) return chat(req, res, rec, state)
    if (m === 'GET' && path === '/api.json') return send(res, rec, 200, {})
    return send(res, rec, 404, { error: { message: `mock-qwen: no route for ${m} ${path}`, type: 'not_found' } })
  }

  async function scriptedAnswer(res, rec, s) {
    if (!(await later(s.delayMs, res))) return
    send(res, rec, s.status, s.body, s.headers)
  }

  const oauthErr = (res, rec, status, error, desc) => send(res, rec, status, { error, error_description: desc })

  function readForm(req, res, rec) {
    const ct = String(req.headers['content-type'] || '').toLowerCase()
    if (!ct.startsWith('application/x-www-form-urlencoded')) {
      oauthErr(res, rec, 400, 'invalid_request', 'Content-Type must be application/x-www-form-urlencoded')
      return null
    }
    return new URLSearchParams(rec.rawBody)
  }

  // ─── OAuth: device authorization ──────────────────────────────────────────────────────────────
  function deviceCode(req, res, rec) {
    const f = readForm(req, res, rec)
    if (!f) return
    if (f.get('client_id') !== config.clientId) return oauthErr(res, rec, 400, 'invalid_client', 'unknown client_id')
    if (f.get('scope') !== config.scope) return oauthErr(res, rec, 400, 'invalid_scope', `scope must be "${config.scope}"`)
    if (f.get('code_challenge_method') !== 'S256')
      return oauthErr(res, rec, 400, 'invalid_request', 'code_challenge_method must be S256')
    const challenge = f.get('code_challenge') || ''
    if (!/^[A-Za-z0-9_-]{43}$/.test(challenge))
      return oauthErr(res, rec, 400, 'invalid_request', 'code_challenge must be base64url(SHA-256) without padding')
    const device_code = `mock-device-${rand()}`
    const uc = userCode()
    const expires_in = config.deviceExpiresInSec
    devices.set(device_code, {
      userCode: uc,
      challenge,
      expiresAt: Date.now() + expires_in * 1000,
      polls: 0,
      pendingAnswered: 0,
      approved: false,
      denied: false,
      done: false,
    })
    const verification_uri = `${mock.url}/authorize`
    send(res, rec, 200, {
      device_code,
      user_code: uc,
      verification_uri,
      verification_uri_complete: `${verification_uri}?user_code=${uc}&client=qwen-code`,
      expires_in,
    })
  }

  function authorizePage(res, rec, query) {
    const code = query.get('user_code')
    const n = code ? (query.get('action') === 'deny' ? mock.deny(code) : mock.approve(code)) : 0
    const msg = n ? 'Authorization complete. You can return to your terminal.' : 'Unknown or finished user code.'
    const html = `<!doctype html><html><head><meta charset="utf-8"><title>Mock Qwen authorize</title></head><body><h1>Mock Qwen</h1><p>${msg}</p></body></html>`
    rec.status = n ? 200 : 404
    res.writeHead(rec.status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html) })
    res.end(html)
  }

  // ─── OAuth: token endpoint (device poll + refresh) ────────────────────────────────────────────
  async function token(req, res, rec) {
    if (tokenQueue.length) return scriptedAnswer(res, rec, tokenQueue.shift())
    const f = readForm(req, res, rec)
    if (!f) return
    if (f.get('client_id') !== config.clientId) return oauthErr(res, rec, 400, 'invalid_client', 'unknown client_id')
    const grant = f.get('grant_type')
    if (grant === DEVICE_GRANT) return devicePoll(res, rec, f)
    if (grant === 'refresh_token') return refresh(res, rec, f)
    return oauthErr(res, rec, 400, 'unsupported_grant_type', `unsupported grant_type ${grant}`)
  }

  function devicePoll(res, rec, f) {
    const e = devices.get(f.get('device_code') || '')
    if (!e || e.done) return oauthErr(res, rec, 400, 'invalid_grant', 'device_code is invalid or already used')
    const verifier = f.get('code_verifier') || ''
    if (b64urlSha256(verifier) !== e.challenge)
      return oauthErr(res, rec, 400, 'invalid_grant', 'code_verifier does not match code_challenge')
    const idx = e.polls++
    if ((config.slowDownPolls || []).includes(idx))
      return send(res, rec, 429, { error: 'slow_down', error_description: 'polling too fast, slow down' })
    if (Date.now() >= e.expiresAt) return oauthErr(res, rec, 400, 'expired_token', 'device code expired')
    if (e.denied) return oauthErr(res, rec, 400, 'access_denied', 'the user denied the request')
    if (!e.approved) {
      if (e.pendingAnswered < config.pendingPolls) {
        e.pendingAnswered++
        return oauthErr(res, rec, 400, 'authorization_pending', 'the authorization request is still pending')
      }
      if (config.deviceOutcome === 'deny') return oauthErr(res, rec, 400, 'access_denied', 'the user denied the request')
      if (config.deviceOutcome === 'expire') return oauthErr(res, rec, 400, 'expired_token', 'device code expired')
      if (!config.autoApprove)
        return oauthErr(res, rec, 400, 'authorization_pending', 'the authorization request is still pending')
    }
    e.done = true
    mock.deviceGrants++
    const pair = mintPair(config.tokenLifetimeSec, 'device')
    send(res, rec, 200, {
      ...pair,
      token_type: 'Bearer',
      expires_in: config.tokenLifetimeSec,
      resource_url: resourceUrl(),
    })
  }

  async function refresh(res, rec, f) {
    const old = f.get('refresh_token') || ''
    const e = refreshTokens.get(old)
    if (!e || e.revoked) {
      if (!(await later(config.refreshDelayMs, res))) return
      return oauthErr(res, rec, 400, 'invalid_grant', 'refresh token is invalid, expired or revoked')
    }
    // Apply the grant immediately so concurrent duplicates with a rotated token fail, like a real server.
    const access_token = `mock-access-${rand()}`
    accessTokens.set(access_token, { expiresAt: Date.now() + config.tokenLifetimeSec * 1000, revoked: false })
    let refresh_token = old
    if (config.rotateRefreshToken) {
      e.revoked = true
      refresh_token = `mock-refresh-${rand()}`
      refreshTokens.set(refresh_token, { revoked: false })
    }
    mock.tokens.push({ access_token, refresh_token, via: 'refresh' })
    mock.refreshGrants++
    const body = {
      access_token,
      token_type: 'Bearer',
      refresh_token,
      expires_in: config.tokenLifetimeSec,
      resource_url: resourceUrl(),
    }
    for (const k of config.refreshOmit || []) delete body[k]
    if (!(await later(config.refreshDelayMs, res))) return
    send(res, rec, 200, body)
  }

  // ─── API: chat completions ────────────────────────────────────────────────────────────────────
  async function chat(req, res, rec, state) {
    const auth = String(req.headers.authorization || '')
    const bearer = /^Bearer\s+(.+)$/i.exec(auth)?.[1]?.trim() || ''
    const ok = bearer && (mock.isValidAccessToken(bearer) || (config.apiKeys || []).includes(bearer))
    if (!ok) return send(res, rec, 401, INVALID_KEY_BODY)
    for (const h of config.refuseHeaders || []) {
      if (req.headers[h.toLowerCase()] !== undefined)
        return send(res, rec, 400, {
          error: { message: `header ${h} is not supported`, type: 'invalid_request_error', code: 'invalid_parameter_error' },
        })
    }
    const body = rec.json
    if (!body || typeof body !== 'object' || Array.isArray(body))
      return send(res, rec, 400, { error: { message: 'request body must be a JSON object', type: 'invalid_request_error', code: 'invalid_parameter_error' } })

    if (config.rateLimitPerMinute != null) {
      const now = Date.now()
      const win = (rateWindows.get(bearer) || []).filter((t) => now - t < 60_000)
      rateWindows.set(bearer, win)
      if (win.length >= config.rateLimitPerMinute) {
        const retry = Math.max(1, Math.ceil((win[0] + 60_000 - now) / 1000))
        return send(res, rec, 429, { error: { message: 'Requests rate limit exceeded, please try again later.', type: 'rate_limit_error', code: 'rate_limit_exceeded' } }, { 'retry-after': String(retry) })
      }
      win.push(now)
    }

    const model = typeof body.model === 'string' ? body.model : 'coder-model'
    const scripted = chatQueue.shift()
    if (scripted && scripted.kind === 'plain') return scriptedAnswer(res, rec, scripted)
    if (scripted && scripted.kind === 'stream') return streamChunks(res, rec, state, model, scripted)

    if (!(await later(config.chatDelayMs, res))) return
    const text = String(config.replyText)
    if (body.stream) {
      const parts = text.match(/\S+\s*|\s+/g) || ['']
      return streamChunks(res, rec, state, model, { chunks: parts, intervalMs: config.chunkDelayMs })
    }
    send(res, rec, 200, {
      id: `chatcmpl-${rand(9)}`,
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model,
      choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop', logprobs: null }],
      usage: usage(text),
    })
  }

  const usage = (text) => {
    const completion_tokens = Math.max(1, Math.ceil(text.length / 4))
    return { prompt_tokens: 12, completion_tokens, total_tokens: 12 + completion_tokens }
  }

  async function streamChunks(res, rec, state, model, { chunks, intervalMs = 20, endless = false, cutAfter }) {
    const id = `chatcmpl-${rand(9)}`
    const created = Math.floor(Date.now() / 1000)
    const frame = (choices, extra) =>
      `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices, ...extra })}\n\n`
    rec.status = 200
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
    res.write(frame([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }]))
    let text = ''
    const list = chunks.length ? chunks : ['']
    if (endless) intervalMs = Math.max(1, intervalMs) // an endless 0 ms loop would starve the event loop
    for (let i = 0; endless || i < list.length; i++) {
      if (!(await later(intervalMs, res))) return
      if (cutAfter != null && state.chunksSent >= cutAfter) {
        state.serverCut = true
        res.destroy()
        return
      }
      const c = String(list[i % list.length])
      text += c
      res.write(frame([{ index: 0, delta: { content: c }, finish_reason: null }]))
      state.chunksSent++
    }
    if (res.destroyed) return
    res.write(frame([{ index: 0, delta: {}, finish_reason: 'stop' }]))
    res.write(frame([], { usage: usage(text) }))
    res.end('data: [DONE]\n\n')
  }

  // ─── lifecycle ────────────────────────────────────────────────────────────────────────────────
  server.keepAliveTimeout = 5_000
  const sockets = new Set()
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  mock.openConnections = () => sockets.size
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = server.address().port
  mock.host = `127.0.0.1:${port}`
  mock.url = `http://${mock.host}`
  mock.port = port

  mock.close = () =>
    new Promise((resolve) => {
      closing = true
      for (const t of timers) clearTimeout(t)
      timers.clear()
      for (const w of requestWaiters) {
        clearTimeout(w.timer)
        w.reject(new Error('mock-qwen: closed while waiting for requests'))
      }
      requestWaiters.clear()
      for (const w of disconnectWaiters.splice(0)) {
        clearTimeout(w.timer)
        w.reject(new Error('mock-qwen: closed while waiting for a disconnect'))
      }
      server.close(() => resolve())
      if (typeof server.closeAllConnections === 'function') server.closeAllConnections()
    })

  return mock
}

// ─── CLI mode ───────────────────────────────────────────────────────────────────────────────────
const isMain =
  import.meta.main === true ||
  (typeof process !== 'undefined' && process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href)

if (isMain) {
  const argv = process.argv.slice(2)
  const i = argv.indexOf('--port')
  const port = i >= 0 ? Number(argv[i + 1]) : 0
  const onRequest = argv.includes('--verbose')
    ? (r) => process.stderr.write(`${r.method} ${r.path} ${r.status}\n`)
    : undefined
  const mock = await startMockQwen({ port, onRequest, config: { autoApprove: !argv.includes('--manual') } })
  process.stdout.write(`mock-qwen listening on ${mock.url}\n`)
  const stop = () => mock.close().then(() => process.exit(0))
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}
