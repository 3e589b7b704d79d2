// The mock Qwen server in a Node process of its own (bench/mock-server.mjs), for scripts that measure the
// process they run in (profile.mjs, hot-path.mjs): its work does not share their thread.
import path from 'node:path'
import readline from 'node:readline'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const HERE = path.dirname(fileURLToPath(import.meta.url))

/** `{ base, qwenHome, opts, stop }` once it listens; `opts` are client options for it with pacing off. */
export async function startMockProcess() {
  const server = spawn('node', [path.join(HERE, 'mock-server.mjs')], { stdio: ['pipe', 'pipe', 'inherit'] })
  const first = await readline.createInterface({ input: server.stdout })[Symbol.asyncIterator]().next()
  const { url: base, qwenHome } = JSON.parse(first.value)
  const opts = { qwenHome, oauthBaseUrl: base, minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0 }
  const stop = () => {
    server.stdin.end()
    return new Promise((resolve) => server.on('exit', resolve))
  }
  return { base, qwenHome, opts, stop }
}
