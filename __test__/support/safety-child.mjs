// Child process of __test__/redaction.test.mjs: runs a list of steps against the addon, the JS API and the
// plugin, and prints one JSON line per step with what a user or a log could see of it: results, error
// codes, messages and util.inspect() of every thrown object. The test scans all of it (and the debug log on
// stderr) for tokens. Never prints a token on purpose.
//
//   node safety-child.mjs '<steps JSON>'
//     env: QWEN_HOME, QWEN_OAUTH_BASE_URL, QWEN_OAUTH_DEBUG=1, proxies, ... as the test sets them.
//   Steps: {op:'login'} | {op:'load'} | {op:'get', force?} | {op:'fetch', url, apiKey?, stream?}
//          | {op:'plugin-fetch', path} (OpenCode's OAuth loader of index.js, `path` below its baseURL)
//          | {op:'authorize'} (index.js OAuth method: starts a login and opens the browser; prints the URL)
//          | {op:'crash'} (an unhandled rejection of getValidCredentials: the process dies with Node's report)
import util from 'node:util'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const api = require('../../api.cjs')
const steps = JSON.parse(process.argv[2] || '[]')

const print = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const failure = (err) => ({ ok: false, code: err?.code, message: String(err?.message ?? err), inspected: util.inspect(err, { depth: 6 }) })

const CHAT_BODY = JSON.stringify({ model: 'coder-model', messages: [{ role: 'user', content: 'hi' }] })

async function plugin() {
  const { QwenCodePlugin } = await import('../../index.js')
  const input = { client: { auth: { set: async () => {} }, tui: { showToast: async () => {} } } }
  return QwenCodePlugin(input, {})
}

for (const step of steps) {
  try {
    switch (step.op) {
      case 'login': {
        const session = await api.startLogin({})
        const c = await session.wait()
        print({ op: step.op, ok: true, userCode: session.userCode, expiryDate: c.expiryDate })
        break
      }
      case 'load': {
        const c = api.loadCredentials({})
        print({ op: step.op, ok: true, resourceUrl: c?.resourceUrl ?? null })
        break
      }
      case 'get': {
        const c = await api.getValidCredentials({}, { force: !!step.force })
        print({ op: step.op, ok: true, apiBaseUrl: c.apiBaseUrl })
        break
      }
      case 'fetch': {
        const client = api.createClient({}, step.apiKey ? { apiKey: step.apiKey } : undefined)
        const body = step.stream ? CHAT_BODY.replace('{', '{"stream":true,') : CHAT_BODY
        const res = await client.fetch(step.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
        const text = await res.text()
        print({ op: step.op, ok: true, status: res.status, bytes: text.length })
        break
      }
      case 'plugin-fetch': {
        const hooks = await plugin()
        const loaded = await hooks.auth.loader(async () => ({ type: 'oauth' }), { options: {} })
        const res = await loaded.fetch(loaded.baseURL + step.path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: CHAT_BODY })
        print({ op: step.op, ok: true, status: res.status, bytes: (await res.text()).length })
        break
      }
      case 'authorize': {
        const hooks = await plugin()
        const method = hooks.auth.methods.find((m) => m.type === 'oauth')
        const r = await method.authorize()
        print({ op: step.op, ok: true, url: r.url })
        break
      }
      case 'crash':
        print({ op: step.op, ok: true, note: 'about to crash' })
        // Deliberately unhandled: Node prints the rejection (util.inspect of the error) and exits 1.
        api.getValidCredentials({}).then(() => {
          print({ op: step.op, ok: true, note: 'did not crash' })
          process.exit(0)
        })
        await new Promise((r) => setTimeout(r, 60_000)) // only keeps the process alive until then
        break
      default:
        print({ op: step.op, ok: false, code: 'E_TEST', message: `unknown step ${step.op}` })
    }
  } catch (err) {
    print({ op: step.op, ...failure(err) })
  }
}
process.exit(0)
