// Tests of the mock Qwen server itself (node:test; also runs under `bun test`).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import http from 'node:http'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { startMockQwen, CLIENT_ID, SCOPE, DEVICE_GRANT } from './support/mock-qwen.mjs'

// Bodies built like the CLI: encodeURIComponent pairs joined with '&' (spaces as %20).
const form = (o) =>
  Object.entries(o)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join('&')
const FORM = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }

function pkce() {
  const verifier = crypto.randomBytes(32).toString('base64url')
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url')
  return { verifier, challenge }
}

async function post(url, headers, body) {
  const r = await fetch(url, { method: 'POST', headers, body })
  const text = await r.text()
  let json = null
  try {
    json = JSON.parse(text)
  } catch {}
  return { status: r.status, headers: r.headers, text, json }
}

const deviceCode = (mock, challenge, extra = {}) =>
  post(
    `${mock.url}/api/v1/oauth2/device/code`,
    FORM,
    form({ client_id: CLIENT_ID, scope: SCOPE, code_challenge: challenge, code_challenge_method: 'S256', ...extra }),
  )
const poll = (mock, device_code, code_verifier) =>
  post(
    `${mock.url}/api/v1/oauth2/token`,
    FORM,
    form({ grant_type: DEVICE_GRANT, client_id: CLIENT_ID, device_code, code_verifier }),
  )
const refresh = (mock, refresh_token) =>
  post(`${mock.url}/api/v1/oauth2/token`, FORM, form({ grant_type: 'refresh_token', refresh_token, client_id: CLIENT_ID }))
const chat = (mock, token, body, headers = {}) =>
  post(
    `${mock.url}/v1/chat/completions`,
    { 'content-type': 'application/json', authorization: `Bearer ${token}`, ...headers },
    JSON.stringify({ model: 'coder-model', messages: [{ role: 'user', content: 'hi' }], ...body }),
  )

function sseContent(text) {
  const events = text
    .split('\n\n')
    .map((e) => e.trim())
    .filter(Boolean)
  assert.equal(events.at(-1), 'data: [DONE]')
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e.replace(/^data: /, '')))
  return { chunks, content: chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('') }
}

let mock
before(async () => {
  mock = await startMockQwen()
})
after(async () => {
  await mock.close()
})

test('device flow: no interval, pending then approve, verifier checked, code single-use', async () => {
  mock.config.pendingPolls = 2
  mock.config.slowDownPolls = [1]
  try {
    const { verifier, challenge } = pkce()
    const dc = await deviceCode(mock, challenge)
    assert.equal(dc.status, 200)
    assert.ok(!('interval' in dc.json))
    assert.match(dc.json.user_code, /^[A-Z]{4}-[A-Z]{4}$/)
    assert.equal(dc.json.verification_uri_complete, `${mock.url}/authorize?user_code=${dc.json.user_code}&client=qwen-code`)
    assert.equal(typeof dc.json.expires_in, 'number')

    const wrong = await poll(mock, dc.json.device_code, pkce().verifier)
    assert.equal(wrong.status, 400)
    assert.equal(wrong.json.error, 'invalid_grant')

    const p0 = await poll(mock, dc.json.device_code, verifier)
    assert.equal(p0.status, 400)
    assert.equal(p0.json.error, 'authorization_pending')
    const p1 = await poll(mock, dc.json.device_code, verifier)
    assert.equal(p1.status, 429)
    assert.equal(p1.json.error, 'slow_down')
    const p2 = await poll(mock, dc.json.device_code, verifier)
    assert.equal(p2.json.error, 'authorization_pending')
    const before = mock.deviceGrants
    const ok = await poll(mock, dc.json.device_code, verifier)
    assert.equal(ok.status, 200)
    assert.equal(ok.json.token_type, 'Bearer')
    assert.equal(ok.json.expires_in, 3600)
    assert.equal(ok.json.resource_url, mock.host)
    assert.ok(mock.isValidAccessToken(ok.json.access_token))
    assert.equal(mock.deviceGrants, before + 1)

    const again = await poll(mock, dc.json.device_code, verifier)
    assert.equal(again.json.error, 'invalid_grant')
  } finally {
    mock.config.pendingPolls = 0
    mock.config.slowDownPolls = []
  }
})

test('device flow: bad requests are 400 JSON; deny/expire outcomes; manual approval page', async () => {
  const { verifier, challenge } = pkce()
  const plain = await deviceCode(mock, challenge, { code_challenge_method: 'plain' })
  assert.equal(plain.status, 400)
  assert.equal(plain.json.error, 'invalid_request')
  const badClient = await deviceCode(mock, challenge, { client_id: 'nope' })
  assert.equal(badClient.status, 400)
  const json = await post(
    `${mock.url}/api/v1/oauth2/device/code`,
    { 'content-type': 'application/json' },
    JSON.stringify({ client_id: CLIENT_ID, scope: SCOPE, code_challenge: challenge, code_challenge_method: 'S256' }),
  )
  assert.equal(json.status, 400)

  for (const [outcome, error] of [['deny', 'access_denied'], ['expire', 'expired_token']]) {
    mock.config.deviceOutcome = outcome
    try {
      const dc = await deviceCode(mock, challenge)
      const r = await poll(mock, dc.json.device_code, verifier)
      assert.equal(r.status, 400)
      assert.equal(r.json.error, error)
    } finally {
      mock.config.deviceOutcome = 'approve'
    }
  }

  mock.config.autoApprove = false
  try {
    const dc = await deviceCode(mock, challenge)
    assert.equal((await poll(mock, dc.json.device_code, verifier)).json.error, 'authorization_pending')
    const page = await fetch(dc.json.verification_uri_complete)
    assert.equal(page.status, 200)
    assert.match(await page.text(), /Authorization complete/)
    assert.equal((await poll(mock, dc.json.device_code, verifier)).status, 200)
  } finally {
    mock.config.autoApprove = true
  }
})

test('refresh rotates the refresh token and the old one is rejected', async () => {
  const seed = mock.issueTokens()
  const before = mock.refreshGrants
  const r1 = await refresh(mock, seed.refresh_token)
  assert.equal(r1.status, 200)
  assert.ok(r1.json.refresh_token && r1.json.refresh_token !== seed.refresh_token)
  assert.ok(r1.json.access_token !== seed.access_token)
  assert.equal(r1.json.expires_in, 3600)
  assert.equal(mock.refreshGrants, before + 1)

  const stale = await refresh(mock, seed.refresh_token)
  assert.equal(stale.status, 400)
  assert.equal(stale.json.error, 'invalid_grant')

  const r2 = await refresh(mock, r1.json.refresh_token)
  assert.equal(r2.status, 200)
  mock.revokeRefreshToken(r2.json.refresh_token)
  assert.equal((await refresh(mock, r2.json.refresh_token)).json.error, 'invalid_grant')
  assert.equal(mock.refreshGrants, before + 2)
})

test('refresh: concurrent duplicate with a rotated token loses; delay holds the answer', async () => {
  mock.config.refreshDelayMs = 150
  try {
    const seed = mock.issueTokens()
    const [a, b] = await Promise.all([refresh(mock, seed.refresh_token), refresh(mock, seed.refresh_token)])
    assert.deepEqual([a.status, b.status].sort(), [200, 400])
  } finally {
    mock.config.refreshDelayMs = 0
  }
})

test('chat: 401 for missing, unknown, expired and invalidated tokens; API keys accepted', async () => {
  const noAuth = await post(`${mock.url}/v1/chat/completions`, { 'content-type': 'application/json' }, '{}')
  assert.equal(noAuth.status, 401)
  assert.equal(noAuth.json.error.code, 'invalid_api_key')
  assert.equal(noAuth.json.error.message, 'invalid access token or token expired')
  assert.equal((await chat(mock, 'mock-access-made-up', {})).status, 401)
  const expired = mock.issueTokens({ expiresInSec: -1 })
  assert.equal((await chat(mock, expired.access_token, {})).status, 401)

  const live = mock.issueTokens()
  assert.equal((await chat(mock, live.access_token, {})).status, 200)
  mock.invalidateAccessTokens()
  assert.equal((await chat(mock, live.access_token, {})).status, 401)

  mock.config.apiKeys = ['sk-mock-key']
  try {
    assert.equal((await chat(mock, 'sk-mock-key', {})).status, 200)
  } finally {
    mock.config.apiKeys = []
  }
})

test('chat: refuses x-session-affinity / openai-beta headers', async () => {
  const t = mock.issueTokens().access_token
  assert.equal((await chat(mock, t, {}, { 'x-session-affinity': 'ses_1' })).status, 400)
  assert.equal((await chat(mock, t, {}, { 'openai-beta': 'assistants=v2' })).status, 400)
})

test('chat: default SSE answer and JSON answer; double-slash path', async () => {
  const t = mock.issueTokens().access_token
  const r = await chat(mock, t, { stream: true, stream_options: { include_usage: true }, model: 'coder-model' })
  assert.equal(r.status, 200)
  assert.match(r.headers.get('content-type'), /^text\/event-stream/)
  const { chunks, content } = sseContent(r.text)
  assert.equal(content, 'Hello from the mock Qwen server!')
  assert.ok(chunks.length >= 5)
  assert.ok(chunks.some((c) => c.choices[0]?.finish_reason === 'stop'))
  assert.ok(chunks.at(-1).usage.total_tokens > 0)
  assert.ok(chunks.every((c) => c.model === 'coder-model' && c.object === 'chat.completion.chunk'))

  const j = await chat(mock, t, { stream: false, model: 'other-model' })
  assert.equal(j.json.object, 'chat.completion')
  assert.equal(j.json.model, 'other-model')
  assert.equal(j.json.choices[0].message.content, 'Hello from the mock Qwen server!')

  // Raw request so the client cannot normalise the '//' away ('host/' resource_url quirk).
  const status = await new Promise((resolve, reject) => {
    const req = http.request(
      `${mock.url}//v1/chat/completions`,
      { method: 'POST', headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' } },
      (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode))
      },
    )
    req.on('error', reject)
    req.end(JSON.stringify({ messages: [] }))
  })
  assert.equal(status, 200)
})

test('chat: scripted answers are consumed in order before the default', async () => {
  const t = mock.issueTokens().access_token
  mock.enqueue429({ retryAfter: '2' })
  mock.enqueueQuota()
  mock.enqueue5xx(503)
  mock.enqueue401()
  const a = await chat(mock, t, {})
  assert.equal(a.status, 429)
  assert.equal(a.headers.get('retry-after'), '2')
  const b = await chat(mock, t, {})
  assert.equal(b.status, 429)
  assert.equal(b.json.error.code, 'insufficient_quota')
  assert.equal(b.json.error.message, 'Free allocated quota exceeded.')
  assert.equal((await chat(mock, t, {})).status, 503)
  assert.equal((await chat(mock, t, {})).status, 401)
  assert.equal((await chat(mock, t, {})).status, 200)
})

test('chat: rate limit per token per rolling minute', async () => {
  mock.config.rateLimitPerMinute = 2
  try {
    const t = mock.issueTokens().access_token
    assert.equal((await chat(mock, t, {})).status, 200)
    assert.equal((await chat(mock, t, {})).status, 200)
    const third = await chat(mock, t, {})
    assert.equal(third.status, 429)
    assert.ok(Number(third.headers.get('retry-after')) >= 1)
    assert.equal((await chat(mock, mock.issueTokens().access_token, {})).status, 200)
  } finally {
    mock.config.rateLimitPerMinute = null
  }
})

test('disconnect: aborting an endless stream is detected', async () => {
  const t = mock.issueTokens().access_token
  const before = mock.disconnects
  mock.enqueueStream({ chunks: ['tick '], intervalMs: 10, endless: true })
  const ac = new AbortController()
  const r = await fetch(`${mock.url}/v1/chat/completions`, {
    method: 'POST',
    signal: ac.signal,
    headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [], stream: true }),
  })
  const reader = r.body.getReader()
  const first = await reader.read()
  assert.ok(!first.done)
  ac.abort()
  await reader.read().catch(() => {})
  const d = await mock.waitForDisconnect(3000)
  assert.equal(d.path, '/v1/chat/completions')
  assert.equal(mock.disconnects, before + 1)
})

test('waitForRequests, /api.json, 404', async () => {
  const waiting = mock.waitForRequests('/api.json', 1, 3000)
  const r = await fetch(`${mock.url}/api.json`)
  assert.deepEqual(await r.json(), {})
  const seen = await waiting
  assert.equal(seen[0].method, 'GET')
  assert.equal((await fetch(`${mock.url}/nope`)).status, 404)
  await assert.rejects(mock.waitForRequests('/never', 1, 50), /timed out/)
})

test('CLI mode prints its URL and serves', async () => {
  const script = fileURLToPath(new URL('./support/mock-qwen.mjs', import.meta.url))
  const child = spawn(process.execPath, [script, '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    const line = await new Promise((resolve, reject) => {
      let buf = ''
      const timer = setTimeout(() => reject(new Error('no listening line within 10 s')), 10_000)
      child.stdout.on('data', (d) => {
        buf += d
        const m = /^mock-qwen listening on (http:\/\/127\.0\.0\.1:\d+)\n/.exec(buf)
        if (m) {
          clearTimeout(timer)
          resolve(m[1])
        }
      })
      child.on('exit', (code) => reject(new Error(`exited early with ${code}`)))
    })
    const r = await fetch(`${line}/api.json`)
    assert.equal(r.status, 200)
  } finally {
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGTERM')
    await exited
  }
})

test('server-side cut (cutAfter) ends the stream early and is not a client disconnect', async () => {
  const t = mock.issueTokens().access_token
  const before = mock.disconnects
  mock.enqueueStream({ chunks: ['a', 'b', 'c', 'd'], intervalMs: 5, cutAfter: 2 })
  const r = await fetch(`${mock.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [], stream: true }),
  })
  assert.equal(r.status, 200)
  await assert.rejects(r.text())
  // The mock's own ordinary answer afterwards proves the cut has been fully handled.
  assert.equal((await chat(mock, t, {})).status, 200)
  assert.equal(mock.disconnects, before)
})

test('scripted token/device answers, refreshOmit, rotateRefreshToken=false, reset()', async () => {
  mock.enqueueDeviceCode({ status: 200, body: { error: 'invalid_request', error_description: 'scripted' } })
  const dc = await deviceCode(mock, pkce().challenge)
  assert.equal(dc.json.error_description, 'scripted')
  mock.enqueueToken({ status: 500, body: 'upstream exploded' })
  const seed = mock.issueTokens()
  const boom = await refresh(mock, seed.refresh_token)
  assert.equal(boom.status, 500)
  assert.equal(boom.text, 'upstream exploded')

  mock.config.rotateRefreshToken = false
  mock.config.refreshOmit = ['resource_url']
  const r1 = await refresh(mock, seed.refresh_token)
  assert.equal(r1.status, 200)
  assert.ok(r1.json.refresh_token === seed.refresh_token)
  assert.ok(!('resource_url' in r1.json))
  assert.equal((await refresh(mock, seed.refresh_token)).status, 200)

  mock.config.rateLimitPerMinute = 1
  mock.enqueue5xx(502)
  mock.reset()
  assert.equal(mock.config.rotateRefreshToken, true)
  assert.deepEqual(mock.config.refreshOmit, [])
  assert.equal(mock.config.rateLimitPerMinute, null)
  assert.equal(mock.requests.length, 0)
  assert.equal(mock.refreshGrants, 0)
  const t = mock.issueTokens().access_token
  assert.equal((await chat(mock, t, {})).status, 200)
  assert.equal((await chat(mock, t, {})).status, 200)
  assert.equal(mock.requestsTo('/v1/chat/completions').length, 2)
})
