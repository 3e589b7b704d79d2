// End-to-end, API-key path: the real OpenCode (npm opencode-ai, pinned) with this package as its plugin, offline.
// The key is stored the way OpenCode's own /connect dialog stores an api-type login (PUT /auth/qwen-code with
// the prompt answers as metadata), with the mock as the endpoint; then `opencode run` answers through our fetch.
// Run: node --test --test-concurrency=1 __test__/apikey.e2e.test.mjs   (build the addon first)
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { startMockQwen } from './support/mock-qwen.mjs'
import { createOpenCodeEnv, freePort, OPENCODE_BIN, PROVIDER_ID } from './support/opencode-env.mjs'

const CHAT = '/v1/chat/completions'
const KEY = 'sk-sp-e2e-coding-plan-key-0123456789'
const TEST_TIMEOUT = 90_000
// `--title` skips OpenCode's separate title request: one prompt is one LLM call.
const ONE_CALL = ['--title', 'e2e']

/** OpenCode retries errors whose message holds 429/50x/524, and our messages name the endpoint (with its port). */
async function startMock(config = {}) {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort()
    if (/429|50[0234]|524/.test(String(port))) continue
    try {
      return await startMockQwen({ port, config })
    } catch (err) {
      if (err.code !== 'EADDRINUSE' || attempt > 5) throw err
    }
  }
}

async function world(t, mockConfig = {}, envOpts = () => ({})) {
  const mock = await startMock({ apiKeys: [KEY], ...mockConfig })
  const oc = await createOpenCodeEnv({ oauthBaseUrl: mock.url, ...envOpts(mock) })
  t.after(async () => {
    await oc.cleanup()
    await mock.close()
  })
  return { mock, oc, endpoint: `${mock.url}/v1` }
}

const output = (r) => `${r.stdout}\n${r.stderr}`
const describeRun = (r) => `rc=${r.code} signal=${r.signal} ${r.ms} ms\n--- stdout\n${r.stdout.slice(-1500)}\n--- stderr\n${r.stderr.slice(-3000)}`

test('API key stored through OpenCode’s serve API, then opencode run answers through the key path', { timeout: TEST_TIMEOUT }, async (t) => {
  const { mock, oc, endpoint } = await world(t)
  const srv = await oc.serve()
  try {
    const methods = (await srv.providerAuthMethods())[PROVIDER_ID]
    const method = methods?.find((m) => m.type === 'api' && m.label === 'Qwen API key (Coding Plan / DashScope)')
    assert.ok(method, `OpenCode lists the API-key method: ${JSON.stringify(methods)}`)
    const [prompt] = method.prompts
    assert.equal(prompt.type, 'select')
    assert.equal(prompt.key, 'endpoint')
    assert.deepEqual(
      prompt.options.map((o) => o.value),
      [
        'https://coding.dashscope.aliyuncs.com/v1',
        'https://coding-intl.dashscope.aliyuncs.com/v1',
        'https://dashscope.aliyuncs.com/compatible-mode/v1',
        'https://dashscope-intl.aliyuncs.com/compatible-mode/v1',
      ],
    )
    // What the TUI's /connect does for an api method: the prompt answers become the stored metadata.
    const put = await srv.request('PUT', `/auth/${PROVIDER_ID}`, { type: 'api', key: KEY, metadata: { endpoint } })
    assert.equal(put.status, 200, put.text)
  } finally {
    await srv.close()
  }
  const stored = oc.authJson()?.[PROVIDER_ID]
  assert.equal(stored?.type, 'api')
  assert.ok(stored.key === KEY, 'OpenCode stored the key')
  assert.deepEqual(stored.metadata, { endpoint })
  assert.equal(fs.statSync(oc.authFile).mode & 0o777, 0o600)

  const r = await oc.run('Say hello', { timeoutMs: 60_000 })
  assert.equal(r.code, 0, describeRun(r))
  assert.ok(r.stdout.includes(mock.config.replyText), describeRun(r))
  const chats = mock.requestsTo(CHAT)
  assert.ok(chats.length >= 1, 'the mock saw the chat requests')
  for (const req of chats) {
    const h = req.headers
    assert.equal(req.status, 200)
    assert.ok(h.authorization === `Bearer ${KEY}`, 'Authorization carries the stored key')
    assert.equal(h['x-dashscope-authtype'], 'openai')
    assert.match(h['user-agent'] ?? '', /^QwenCode\/\d+\.\d+\.\d+\S* \([^;]+; [^)]+\)$/)
    assert.equal(h['x-dashscope-useragent'], h['user-agent'])
    assert.equal(h['x-dashscope-cachecontrol'], 'enable')
    assert.equal(h['x-session-affinity'], undefined)
    assert.equal(req.json.model, 'qwen3.5-plus', 'coder-model (the configured model) went out as the Coding Plan default')
  }
  assert.equal(mock.refreshGrants + mock.deviceGrants, 0, 'no OAuth traffic')
  assert.equal(oc.qwenCreds(), null, 'nothing written to the shared OAuth file')
})

test('a refused key (401): OpenCode prints "key refused for this endpoint" with the login to fix it', { timeout: TEST_TIMEOUT }, async (t) => {
  const { mock, oc, endpoint } = await world(t)
  oc.writeAuthJson({ [PROVIDER_ID]: { type: 'api', key: 'sk-sp-e2e-revoked-key-000', metadata: { endpoint } } })
  const r = await oc.run('Say hello', { timeoutMs: 60_000, args: ONE_CALL })
  const out = output(r)
  assert.ok(out.includes('key refused for this endpoint'), describeRun(r))
  assert.ok(out.includes('Qwen API key (Coding Plan / DashScope)'), describeRun(r))
  assert.ok(!out.includes('sk-sp-e2e-revoked-key-000'), 'the key is not printed')
  assert.ok(!r.stdout.includes(mock.config.replyText), describeRun(r))
  assert.equal(mock.requestsTo(CHAT).length, 1, 'no retry of a refused key')
})

test('the Coding Plan 405 "only available for Coding Agents" is explained in OpenCode', { timeout: TEST_TIMEOUT }, async (t) => {
  const { mock, oc, endpoint } = await world(t)
  oc.writeAuthJson({ [PROVIDER_ID]: { type: 'api', key: KEY, metadata: { endpoint } } })
  mock.enqueue({ status: 405, body: { error: 'Coding Plan is currently only available for Coding Agents' } })
  const r = await oc.run('Say hello', { timeoutMs: 60_000, args: ONE_CALL })
  const out = output(r)
  assert.ok(out.includes('only available for Coding Agents'), describeRun(r))
  assert.ok(out.includes('User-Agent'), describeRun(r))
  assert.equal(mock.requestsTo(CHAT).length, 1)
})

const hasTmux = (() => {
  try {
    execFileSync('tmux', ['-V'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
})()

test(
  '`opencode auth login` in a terminal: endpoint menu, OpenCode’s masked key field, stored with the endpoint; a baseURL in the config wins',
  { timeout: TEST_TIMEOUT, skip: !hasTmux && 'tmux is not installed' },
  async (t) => {
    // The user's provider block points the provider at the mock, so the stored (real) endpoint is not used.
    const { mock, oc } = await world(t, {}, (m) => ({ config: { provider: { [PROVIDER_ID]: { options: { baseURL: `${m.url}/v1` } } } } }))
    const sock = path.join(oc.root, 'tmux.sock')
    const tmux = (...args) => execFileSync('tmux', ['-S', sock, ...args], { encoding: 'utf8' })
    const envArgs = Object.entries(oc.env).flatMap(([k, v]) => ['-e', `${k}=${v}`])
    tmux('new-session', '-d', '-s', 'login', '-x', '160', '-y', '40', ...envArgs, '-c', oc.paths.project,
      `'${OPENCODE_BIN}' auth login; echo "EXIT=$?"; sleep 60`)
    t.after(() => {
      try {
        tmux('kill-server')
      } catch {
        /* already gone */
      }
    })
    const screen = () => tmux('capture-pane', '-p', '-t', 'login')
    const waitFor = (re, what) => oc.waitFor(() => re.test(screen()), { timeoutMs: 30_000, what: `${what}; screen:\n${screen()}` })

    await waitFor(/Select provider/, 'the provider menu')
    tmux('send-keys', '-t', 'login', '-l', 'Qwen')
    await waitFor(/Qwen Code/, 'Qwen Code in the provider menu')
    tmux('send-keys', '-t', 'login', 'Enter')
    await waitFor(/Login method/, 'the method menu')
    tmux('send-keys', '-t', 'login', 'Down', 'Enter')
    await waitFor(/Endpoint of your key/, 'the endpoint menu')
    tmux('send-keys', '-t', 'login', 'Enter') // the first choice: Coding Plan China
    await waitFor(/Enter your API key/, 'the key field')
    tmux('send-keys', '-t', 'login', '-l', KEY)
    tmux('send-keys', '-t', 'login', 'Enter')
    await waitFor(/EXIT=0/, 'a successful login')
    assert.ok(!screen().includes(KEY), 'the key field is masked')

    const stored = oc.authJson()?.[PROVIDER_ID]
    assert.equal(stored?.type, 'api')
    assert.ok(stored.key === KEY, 'OpenCode stored the key')
    assert.deepEqual(stored.metadata, { endpoint: 'https://coding.dashscope.aliyuncs.com/v1' })

    const r = await oc.run('Say hello', { timeoutMs: 60_000, args: ONE_CALL })
    assert.equal(r.code, 0, describeRun(r))
    assert.ok(r.stdout.includes(mock.config.replyText), describeRun(r))
    const [req] = mock.requestsTo(CHAT)
    assert.ok(req.headers.authorization === `Bearer ${KEY}`)
    assert.equal(req.json.model, 'qwen3.5-plus')
  },
)
