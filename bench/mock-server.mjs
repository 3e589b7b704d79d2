// The mock Qwen server in a process of its own (for bench/profile.mjs): prints one JSON line
// { url, qwenHome, homes } once it listens and a credentials file it issued is in place in each home (argv[2]
// homes, default 1; `qwenHome` is the first), each its own token chain; ends when stdin closes. Never prints a
// token.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { startMockQwen } from '../__test__/support/mock-qwen.mjs'

const mock = await startMockQwen({ config: {} })
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-profile-'))
const homes = Array.from({ length: Math.max(1, Number(process.argv[2] ?? 1)) }, (_, i) => {
  const home = path.join(dir, i === 0 ? 'home' : `home-${i}`)
  fs.mkdirSync(home, { mode: 0o700 })
  // issueTokens answers exactly the file's keys (in another order, which the reader does not mind).
  fs.writeFileSync(path.join(home, 'oauth_creds.json'), JSON.stringify(mock.issueTokens()), { mode: 0o600 })
  return home
})
const qwenHome = homes[0]
// The recorded requests would grow without bound over a long profile.
const trim = setInterval(() => mock.requests.splice(0), 1000)
process.stdout.write(JSON.stringify({ url: mock.url, qwenHome, homes }) + '\n')
process.stdin.resume()
process.stdin.on('end', async () => {
  clearInterval(trim)
  await mock.close()
  // The profiled process may still be writing its quota state file into the home (it flushes as it exits): retry
  // a racing rmdir, and once more after it has surely exited.
  const remove = () => fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 })
  try {
    remove()
  } catch {
    await new Promise((resolve) => setTimeout(resolve, 500))
    try {
      remove()
    } catch (err) {
      process.stderr.write(`mock: could not remove ${dir}: ${err.message}\n`)
    }
  }
  process.exit(0)
})
