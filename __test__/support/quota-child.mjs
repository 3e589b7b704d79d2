// Child process for quota.test.mjs: one client in its own process (so counts can only meet in the shared
// state file), with the quota clock started by the parent through QWEN_OAUTH_FAKE_NOW_MS (read once per
// process by the native core). argv[2]: JSON { url, apiKey, count, id, options, waitForGo, removeHome }.
// Prints "ready" once loaded; with waitForGo, sends its requests after "go" on stdin. Ends with one JSON line:
// { id, statuses, before, after, seen } — the quota view (quotaStatus) before and after its requests, and the
// view its client saw after its last request (client.quota()). With removeHome, once its counts are in the
// file it deletes options.qwenHome (as a logout that removes ~/.qwen) and sends one more request, whose count
// is then still in memory when the process exits.
import fs from 'node:fs'
import api from '../../api.cjs'
import { sendChats, waitForGo as goSignal } from './children.mjs'

const { url, apiKey, count, id, options, waitForGo, removeHome } = JSON.parse(process.argv[2])
const client = api.createClient(options, { apiKey })

process.stdout.write('ready\n')
if (waitForGo) await goSignal()

const before = api.quotaStatus(options)
const statuses = await sendChats(client, url, { count, id, tag: 'x-quota-child' })
if (removeHome) {
  api.flushQuota()
  fs.rmSync(options.qwenHome, { recursive: true })
  statuses.push(...(await sendChats(client, url, { count: 1, id, tag: 'x-quota-child' })))
}
const after = api.quotaStatus(options)
process.stdout.write(JSON.stringify({ id, statuses, before, after, seen: client.quota() }) + '\n')
