// Child process for pacing.test.mjs: one client (its own process, so pacing can only work through the shared
// state file), `count` sequential chat requests once the parent says "go" on stdin.
// argv[2]: JSON { url, apiKey, count, id, options }. Prints "ready" once loaded, then one JSON result line.
// The pipeline's debug log (stderr) carries the pacing start times the parent checks.
import api from '../../api.cjs'
import { sendChats, waitForGo } from './children.mjs'

const { url, apiKey, count, id, options } = JSON.parse(process.argv[2])
const client = api.createClient({ ...options, debug: true }, { apiKey })

// The runtime's own HTTP client (undici under Node) loads on its first use, tens of ms that would fall between
// the first request's pacing slot and its send when the runtime transport carries it. Loaded beforehand, the
// arrival gaps the parent checks measure pacing, not that one-time start-up. (Not a chat request: not counted.)
await (await fetch(new URL('/warm-up', url))).arrayBuffer()
process.stdout.write('ready\n')
await waitForGo()

const statuses = await sendChats(client, url, { count, id, tag: 'x-pacing-child' })
process.stdout.write(JSON.stringify({ id, statuses }) + '\n')
