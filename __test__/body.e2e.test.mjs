// End-to-end: the bodies the real OpenCode sends, as they reach the (mock) Qwen server through the plugin:
// aligned with the Qwen Code CLI by default (title request aside, main request marked and numbered), and
// byte for byte OpenCode's with the plugin option alignRequestBody: false.
// Run: node --test --test-concurrency=1 __test__/body.e2e.test.mjs   (build the addon first)
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { startMockQwen } from './support/mock-qwen.mjs'
import { createOpenCodeEnv, freePort, PROVIDER_ID } from './support/opencode-env.mjs'

const CHAT = '/v1/chat/completions'
const TEST_TIMEOUT = 90_000
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
const EPHEMERAL = { type: 'ephemeral' }

/** A mock on a port without OpenCode's retry digits (429/50x/524), resource_url pointing at it. */
async function startMock() {
  let mock
  for (let attempt = 0; !mock; attempt++) {
    const port = await freePort()
    if (/429|50[0234]|524/.test(String(port))) continue
    try {
      mock = await startMockQwen({ port })
    } catch (err) {
      if (err.code !== 'EADDRINUSE' || attempt > 5) throw err
    }
  }
  mock.config.resourceUrl = mock.url
  return mock
}

/** A logged-in OpenCode world (both stores seeded), torn down after the test. */
async function loggedIn(t, envOpts = {}) {
  const mock = await startMock()
  const oc = await createOpenCodeEnv({ oauthBaseUrl: mock.url, ...envOpts })
  t.after(async () => {
    await oc.cleanup()
    await mock.close()
  })
  const l = mock.issueTokens()
  oc.writeQwenCreds({ access_token: l.access_token, refresh_token: l.refresh_token, token_type: l.token_type ?? 'Bearer', resource_url: l.resource_url, expiry_date: l.expiry_date })
  oc.writeAuthJson({ [PROVIDER_ID]: { type: 'oauth', access: l.access_token, refresh: l.refresh_token, expires: l.expiry_date, enterpriseUrl: l.resource_url } })
  return { mock, oc }
}

const describeRun = (r) => `rc=${r.code} ${r.ms} ms\n--- stdout\n${r.stdout.slice(-1500)}\n--- stderr\n${r.stderr.slice(-3000)}`
const lastPart = (message) => (Array.isArray(message.content) ? message.content.at(-1) : undefined)

test("OpenCode's title and main request go out as the CLI sends them", { timeout: TEST_TIMEOUT }, async (t) => {
  const { mock, oc } = await loggedIn(t)
  const r = await oc.run('Say hello', { timeoutMs: 60_000 })
  assert.equal(r.code, 0, describeRun(r))
  assert.ok(r.stdout.includes(mock.config.replyText), describeRun(r))

  const chats = mock.requestsTo(CHAT).map((c) => c.json)
  const title = chats.find((b) => !b.tools)
  const main = chats.find((b) => b.tools)
  assert.ok(title && main, `a title and a main request: ${JSON.stringify(chats.map((b) => Object.keys(b)))}`)

  const sid = main.metadata.sessionId
  assert.match(sid, UUID_V4)
  assert.deepEqual(title.metadata, { sessionId: sid, promptId: 'side-query:session-title' }, 'same session; the title is a side query')
  assert.equal(main.metadata.promptId, `${sid}########0`, 'the first user prompt')

  for (const body of [title, main]) {
    assert.equal(body.model, 'coder-model')
    assert.equal(body.stream, true)
    assert.deepEqual(body.stream_options, { include_usage: true })
    assert.equal(body.vl_high_resolution_images, true)
    assert.equal(body.preserve_thinking, true)
    const keys = Object.keys(body)
    assert.deepEqual(keys.slice(-3), ['metadata', 'vl_high_resolution_images', 'preserve_thinking'], "added after OpenCode's keys")
    assert.equal(keys[0], 'model', "OpenCode's keys keep their order")
    // System: OpenCode's string became one marked text part; streaming: the last message is marked too.
    const system = body.messages.find((m) => m.role === 'system')
    assert.equal(system.content.length, 1)
    assert.equal(system.content[0].type, 'text')
    assert.ok(system.content[0].text.length > 0)
    assert.deepEqual(system.content[0].cache_control, EPHEMERAL)
    assert.deepEqual(lastPart(body.messages.at(-1))?.cache_control, EPHEMERAL)
    const marked = body.messages.filter((m) => Array.isArray(m.content) && m.content.some((p) => p.cache_control))
    assert.equal(marked.length, 2, 'system and last message only')
  }
  // The last of OpenCode's tools carries the marker, no other does.
  assert.ok(main.tools.length > 1)
  assert.deepEqual(main.tools.at(-1).cache_control, EPHEMERAL)
  assert.ok(main.tools.slice(0, -1).every((tool) => tool.cache_control === undefined))
})

test('plugin option alignRequestBody: false: OpenCode’s body reaches the server unchanged', { timeout: TEST_TIMEOUT }, async (t) => {
  const { mock, oc } = await loggedIn(t, { pluginOptions: { alignRequestBody: false } })
  const r = await oc.run('Say hello', { timeoutMs: 60_000, args: ['--title', 'e2e'] })
  assert.equal(r.code, 0, describeRun(r))
  const [chat] = mock.requestsTo(CHAT)
  assert.ok(chat, 'one chat request')
  for (const key of ['metadata', 'vl_high_resolution_images', 'preserve_thinking']) assert.equal(chat.json[key], undefined, key)
  assert.ok(!chat.rawBody.includes('cache_control'))
  assert.equal(typeof chat.json.messages.find((m) => m.role === 'system').content, 'string')
  // The text is still JSON.stringify's: what OpenCode wrote, untouched.
  assert.equal(chat.rawBody, JSON.stringify(chat.json))
})
