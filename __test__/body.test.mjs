// Request bodies aligned with the Qwen Code CLI: what reaches the mock through api.createClient is compared byte
// for byte with what the CLI's own DashScope provider (Qwen Code 0.24.4, the pinned devDependency) builds from
// the same body, for the OAuth and the API-key path; the prompt counter over OpenCode's request sequence; and
// the off switch (option and env) and the bodies that must go out untouched. node:test; also runs under `bun test`.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import api from '../api.cjs'
import { startMockQwen } from './support/mock-qwen.mjs'
import { CASES, cliBuild, fixture } from './support/cli-bodies.mjs'
import { cleanupsAfterEach, removeTempDir } from './support/helpers.mjs'

const CHAT = '/v1/chat/completions'
const NO_PACING = { minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0 }
const API_KEY = 'sk-sp-test-body-key-0123456789'
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
const HERE = path.dirname(fileURLToPath(import.meta.url))
const FIXTURE = path.join(HERE, 'fixtures', 'cli-bodies.json')

const cleanups = cleanupsAfterEach()

/** A mock, a private QWEN_HOME with valid OAuth credentials from it, and client options (pacing off). */
async function setup() {
  const mock = await startMockQwen({ config: { apiKeys: [API_KEY] } })
  cleanups.push(() => mock.close())
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-body-'))
  cleanups.push(() => removeTempDir(tmp))
  const qwenHome = path.join(tmp, 'qwen-home')
  fs.mkdirSync(qwenHome, { mode: 0o700 })
  const { access_token, refresh_token, token_type, resource_url, expiry_date } = mock.issueTokens()
  fs.writeFileSync(
    path.join(qwenHome, 'oauth_creds.json'),
    JSON.stringify({ access_token, refresh_token, token_type, resource_url, expiry_date }, null, 2),
    { mode: 0o600 },
  )
  const opts = { qwenHome, oauthBaseUrl: mock.url, ...NO_PACING }
  return { mock, opts, url: `${mock.url}${CHAT}` }
}

/** A request as OpenCode's AI SDK sends it: JSON text, its session headers. */
function init(body, { session, contentType = 'application/json' } = {}) {
  const headers = { 'content-type': contentType }
  if (session) Object.assign(headers, { 'x-session-id': session, 'x-session-affinity': session })
  return { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) }
}

/** Send and drain; returns the request as the mock saw it. */
async function send(client, mock, url, requestInit) {
  const before = mock.requestsTo(CHAT).length
  await (await client.fetch(url, requestInit)).arrayBuffer()
  const recs = mock.requestsTo(CHAT)
  assert.equal(recs.length, before + 1)
  return recs[before]
}

const isQwen = (model) => /^qwen/i.test(model) || model.toLowerCase() === 'coder-model'

test('the fixture the Rust unit tests check against is what the CLI builds today', async () => {
  const saved = JSON.parse(fs.readFileSync(FIXTURE, 'utf8'))
  const now = await fixture()
  assert.deepEqual(Object.keys(saved), Object.keys(CASES))
  for (const name of Object.keys(CASES)) {
    assert.equal(saved[name].in, now[name].in, `${name}: input`)
    assert.equal(saved[name].out, now[name].out, `${name}: the CLI's output (regenerate with node __test__/support/cli-bodies.mjs)`)
    assert.notEqual(saved[name].in, saved[name].out, `${name}: the CLI changes every case`)
  }
})

test('OAuth: every case reaches the server byte for byte as the CLI would send it', async () => {
  const { mock, opts, url } = await setup()
  const client = api.createClient(opts)
  for (const [name, body] of Object.entries(CASES)) {
    const rec = await send(client, mock, url, init(body, { session: `ses_js_oauth_${name}` }))
    const sessionId = rec.json.metadata?.sessionId ?? 'none'
    if (isQwen(body.model)) assert.match(sessionId, UUID_V4, name)
    else assert.equal(rec.json.metadata, undefined, `${name}: no metadata for a non-qwen model`)
    const promptId = name === 'title' ? 'side-query:session-title' : `${sessionId}########0`
    assert.equal(rec.rawBody, await cliBuild(body, { sessionId, promptId }), name)
    assert.equal(rec.headers['x-dashscope-authtype'], 'qwen-oauth')
  }
})

test('API key: the same rules apply to the model that goes out (coder-model → qwen3.5-plus on the Coding Plan)', async () => {
  const { mock, opts, url } = await setup()
  const client = api.createClient(opts, { apiKey: API_KEY })
  for (const [name, body] of Object.entries(CASES)) {
    const rec = await send(client, mock, url, init(body, { session: `ses_js_key_${name}` }))
    const wire = { ...body, model: body.model === 'coder-model' ? 'qwen3.5-plus' : body.model }
    assert.equal(rec.json.model, wire.model)
    const sessionId = rec.json.metadata?.sessionId ?? 'none'
    const promptId = name === 'title' ? 'side-query:session-title' : `${sessionId}########0`
    assert.equal(rec.rawBody, await cliBuild(wire, { sessionId, promptId, authType: 'openai' }), name)
    assert.equal(rec.headers['x-dashscope-authtype'], 'openai')
  }
})

test("promptId over OpenCode's sequence: title aside, one id per user prompt, tool turns keep their prompt's", async () => {
  const { mock, opts, url } = await setup()
  const client = api.createClient(opts)
  const tools = [{ type: 'function', function: { name: 'bash', parameters: {} } }]
  const system = { role: 'system', content: 'You are opencode.' }
  const user1 = { role: 'user', content: 'list the files' }
  const call = { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'bash', arguments: '{}' } }] }
  const result = { role: 'tool', tool_call_id: 'c1', content: 'a.txt' }
  const answer = { role: 'assistant', content: 'There is a.txt.' }
  const user2 = { role: 'user', content: 'thanks' }
  const main = (messages) => ({ model: 'coder-model', max_tokens: 32000, messages: [system, ...messages], tools, tool_choice: 'auto', stream: true, stream_options: { include_usage: true } })
  const sequence = [
    ['title', CASES.title],
    ['prompt 1', main([user1])],
    ['tool turn', main([user1, call, result])],
    ['prompt 2', main([user1, call, result, answer, user2])],
  ]
  const seen = []
  for (const [what, body] of sequence) {
    const rec = await send(client, mock, url, init(body, { session: 'ses_js_sequence' }))
    seen.push([what, rec.json.metadata.sessionId, rec.json.metadata.promptId])
    assert.equal(rec.headers['x-session-affinity'], undefined, 'still not forwarded')
  }
  const sid = seen[0][1]
  assert.match(sid, UUID_V4)
  assert.ok(seen.every(([, s]) => s === sid), 'one sessionId for the OpenCode session')
  assert.deepEqual(
    seen.map(([what, , p]) => [what, p]),
    [
      ['title', 'side-query:session-title'],
      ['prompt 1', `${sid}########0`],
      ['tool turn', `${sid}########0`],
      ['prompt 2', `${sid}########1`],
    ],
  )
  // Another OpenCode session gets its own id, and starts at 0.
  const other = await send(client, mock, url, init(main([user1]), { session: 'ses_js_sequence_other' }))
  assert.notEqual(other.json.metadata.sessionId, sid)
  assert.equal(other.json.metadata.promptId, `${other.json.metadata.sessionId}########0`)
  // Without session headers the client has a session of its own.
  const bare = await send(client, mock, url, init(main([user1])))
  assert.match(bare.json.metadata.sessionId, UUID_V4)
  assert.ok(![sid, other.json.metadata.sessionId].includes(bare.json.metadata.sessionId))
})

test('alignRequestBody: false and QWEN_ALIGN_BODY=0 send the body byte for byte as given', async () => {
  const { mock, opts, url } = await setup()
  const body = JSON.stringify(CASES.stream_tools)
  const off = api.createClient({ ...opts, alignRequestBody: false })
  assert.equal((await send(off, mock, url, init(body, { session: 'ses_js_off' }))).rawBody, body)

  // The env switch in a process of its own: Bun's process.env does not reach a running addon's environment.
  const script = path.join(opts.qwenHome, '..', 'env-off.mjs')
  fs.writeFileSync(
    script,
    `import api from ${JSON.stringify(path.join(HERE, '..', 'api.cjs'))}
const [url, opts, body] = process.argv.slice(2)
const client = api.createClient(JSON.parse(opts))
const res = await client.fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
await res.arrayBuffer()
console.log(res.status)`,
  )
  const child = spawn(process.execPath, [script, url, JSON.stringify(opts), body], {
    env: { ...process.env, QWEN_ALIGN_BODY: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  const [code] = await once(child, 'exit')
  assert.equal(code, 0)
  assert.equal(out.trim(), '200')
  assert.equal(mock.requestsTo(CHAT).at(-1).rawBody, body)
  // The option wins over the env; and the control: on by default.
  const on = api.createClient({ ...opts, alignRequestBody: true })
  assert.notEqual((await send(on, mock, url, init(body))).rawBody, body)
  assert.notEqual((await send(api.createClient(opts), mock, url, init(body))).rawBody, body)

  assert.throws(() => api.createClient({ ...opts, alignRequestBody: 'no' }), (e) => e.code === 'E_INVALID_ARG' && /alignRequestBody/.test(e.message))
})

test('bodies that are not JSON objects, not declared JSON or not for chat completions go out untouched', async () => {
  const { mock, opts, url } = await setup()
  const client = api.createClient(opts)
  const object = JSON.stringify(CASES.nonstream)
  for (const [what, target, requestInit] of [
    ['JSON array', url, init('[{"role":"system","content":"s"}]')],
    ['broken JSON', url, init('{"model":"coder-model",')],
    ['text/plain', url, init(object, { contentType: 'text/plain' })],
    ['other path', `${mock.url}/v1/embeddings`, init(object)],
  ]) {
    const before = mock.requests.length
    await (await client.fetch(target, requestInit)).arrayBuffer()
    const rec = mock.requests[before]
    assert.equal(rec.rawBody, requestInit.body, what)
  }
})

test('numbers and strings keep the text JSON.stringify gives them', async () => {
  const { mock, opts, url } = await setup()
  const client = api.createClient(opts)
  // Doubles across the ranges where JS switches notation, negative too, plus awkward strings.
  const numbers = []
  for (let e = -12; e <= 25; e++) numbers.push(1.2345 * 10 ** e, -(7 / 3) * 10 ** e, 10 ** e, 0.1 + 0.2 * e)
  const body = {
    model: 'coder-model',
    temperature: 0.5,
    top_p: 0.95,
    numbers,
    messages: [
      { role: 'system', content: 'tab\t nl\n cr\r nul\u0000 bell\u0007 \u2028\u2029 quote" backslash\\ slash/ 中文 😀 \ud83d\ude00' },
      { role: 'user', content: '<script>&amp;</script> \u007f \u0080 \uffff' },
    ],
    stream: false,
  }
  const rec = await send(client, mock, url, init(body, { session: 'ses_js_numbers' }))
  const { sessionId, promptId } = rec.json.metadata
  assert.equal(rec.rawBody, await cliBuild(body, { sessionId, promptId }))
})
