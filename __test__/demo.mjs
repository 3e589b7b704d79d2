// `npm run demo`: the whole product, offline, in about ten seconds. Starts the mock Qwen server on
// 127.0.0.1, runs the real OpenCode (npm opencode-ai, a dev dependency) with this plugin in a throw-away
// HOME, logs in with the Qwen device flow through OpenCode's own auth API (the mock approves the code),
// then sends one prompt and streams the answer. Nothing outside a temp dir is read or written.
import { startMockQwen } from './support/mock-qwen.mjs'
import { createOpenCodeEnv, PROVIDER_ID } from './support/opencode-env.mjs'

const PROMPT = 'Say hello'
const tty = process.stdout.isTTY
const dim = (s) => (tty ? `\x1b[2m${s}\x1b[0m` : s)
const bold = (s) => (tty ? `\x1b[1m${s}\x1b[0m` : s)
const step = (s) => console.log(`\n${bold('▸')} ${s}`)

let mock
let oc
let cleaning
async function cleanup() {
  cleaning ??= (async () => {
    await oc?.cleanup().catch(() => {})
    await mock?.close().catch(() => {})
  })()
  return cleaning
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    console.error(`\n${sig}: cleaning up`)
    cleanup().finally(() => process.exit(130))
  })
}

async function main() {
  step('Starting the mock Qwen server (OAuth device flow + chat API) on 127.0.0.1')
  // autoApprove: the mock approves a device code on the first poll, as if the user clicked "Confirm".
  mock = await startMockQwen({ config: { autoApprove: true } })
  // An http resource_url keeps the API on plain-HTTP loopback (the real one is a bare https host).
  mock.config.resourceUrl = mock.url
  console.log(dim(`  ${mock.url}`))

  step('Creating an isolated OpenCode home with the plugin configured')
  // Default pacing, as a user gets it (the prompt makes two calls: title + answer).
  oc = await createOpenCodeEnv({ oauthBaseUrl: mock.url, defaultPacing: true })
  console.log(dim(`  ${oc.root}  (opencode.json: "plugin": [["${oc.config.plugin[0][0]}", {...}]])`))

  step('Logging in through OpenCode (opencode serve → Qwen Code → "Qwen Code (qwen.ai OAuth)")')
  const srv = await oc.serve()
  try {
    const methods = (await srv.providerAuthMethods())[PROVIDER_ID] ?? []
    const index = methods.findIndex((m) => m.type === 'oauth')
    if (index < 0) throw new Error(`OpenCode offers no OAuth login for ${PROVIDER_ID}: ${JSON.stringify(methods)}`)
    console.log(`  Login method: ${methods[index].label}`)
    const auth = await srv.authorize(index)
    console.log(`  Go to: ${auth.url}`)
    console.log(`  ${auth.instructions}`)
    const cb = await srv.callback(index, undefined, { timeoutMs: 60_000 })
    if (cb.status !== 200 || cb.json !== true) throw new Error(`login failed: HTTP ${cb.status} ${cb.text}`)
    console.log(`  ✓ The mock Qwen server approved the code (device grants: ${mock.deviceGrants}); login successful.`)
  } finally {
    await srv.close()
  }
  const creds = oc.qwenCreds()
  const stored = oc.authJson()?.[PROVIDER_ID]
  if (!creds || !stored) throw new Error('the login was not saved')
  console.log(dim(`  Saved to ${oc.credsFile} (mode ${creds.mode.toString(8)}) and OpenCode's ${oc.authFile}`))

  step(`opencode run --model qwen-code/coder-model "${PROMPT}"`)
  const r = await oc.run(PROMPT, {
    timeoutMs: 90_000,
    onStdout: (d) => process.stdout.write(d),
    onStderr: (d) => process.stderr.write(dim(d)),
  })
  if (r.code !== 0) throw new Error(`opencode run exited with ${r.code ?? r.signal}`)
  if (!r.stdout.includes(mock.config.replyText)) throw new Error("the mock's answer was not printed")

  const chats = mock.requestsTo('/v1/chat/completions')
  const ua = chats[0]?.headers['user-agent']
  step(`Done in ${(r.ms / 1000).toFixed(1)} s: ${chats.length} chat request(s) reached the mock, sent as ${ua}`)
}

let code = 0
try {
  await main()
} catch (err) {
  console.error(`\n✗ demo failed: ${err?.message ?? err}`)
  code = 1
} finally {
  await cleanup()
}
process.exit(code)
