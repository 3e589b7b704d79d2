// The mock Qwen server in a Node process of its own (bench/mock-server.mjs), for scripts that measure the
// process they run in (profile.mjs, hot-path.mjs): its work does not share their thread.
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const HERE = path.dirname(fileURLToPath(import.meta.url))

/**
 * `{ base, qwenHome, homes, opts, stop }` once it listens; `opts` are client options for it with pacing off (for
 * `qwenHome`, the first of `homes`: `homes` credentials homes, each on a token chain of its own).
 */
export async function startMockProcess({ homes: count = 1 } = {}) {
  const server = spawn('node', [path.join(HERE, 'mock-server.mjs'), String(count)], { stdio: ['pipe', 'pipe', 'inherit'] })
  const first = await readline.createInterface({ input: server.stdout })[Symbol.asyncIterator]().next()
  const { url: base, qwenHome, homes } = JSON.parse(first.value)
  const opts = { qwenHome, oauthBaseUrl: base, minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0 }
  const stop = () => {
    // The addon writes this process's pending quota counts into the home as the process exits, after the mock
    // removed it. It no longer re-creates a home it had written to, but it still makes one whose state file this
    // process never saw (counts still in memory from the start). Remove it once more after that write.
    process.once('exit', () => fs.rmSync(path.dirname(qwenHome), { recursive: true, force: true }))
    server.stdin.end()
    return new Promise((resolve) => server.on('exit', resolve))
  }
  return { base, qwenHome, homes, opts, stop }
}

/**
 * The small chat request both the runtime's fetch and ours send in the scripts that time requests: `init()` makes
 * a fresh init (with a signal, as OpenCode's AI SDK calls carry one) holding the token the mock issued, which the
 * baseline needs (ours take it from the same file); never printed.
 */
export function chatRequest(qwenHome, { stream = false } = {}) {
  const body = JSON.stringify({ model: 'coder-model', stream, messages: [{ role: 'user', content: 'hi' }] })
  const token = JSON.parse(fs.readFileSync(path.join(qwenHome, 'oauth_creds.json'), 'utf8')).access_token
  const init = () => ({
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    signal: new AbortController().signal,
    body,
  })
  return { body, init }
}
