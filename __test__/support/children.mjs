// Spawning and talking to child processes (Node and Bun): child-token.mjs for the credential tests, and the
// ready/go children of the pacing and quota tests, whose side of the handshake (`waitForGo`, `sendChats`) is here too.
import { spawn } from 'node:child_process'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'child-token.mjs')

/** Start `child-token.mjs <args…>` with `env` added; line-oriented stdout, stderr collected. */
export function spawnChild(args, env = {}) {
  return spawnScript(CHILD, args, env)
}

/** The same for any script (path), run by this runtime (node or bun). */
export function spawnScript(script, args = [], env = {}) {
  const proc = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const queued = []
  const waiters = []
  const stderrWaiters = []
  let stderr = ''
  let exitInfo = null
  const exited = new Promise((resolve) =>
    // 'close', not 'exit': a last line may still be on its way when the process has exited.
    proc.on('close', (code, signal) => {
      exitInfo = { code, signal }
      for (const w of waiters.splice(0)) w.reject(new Error(`child exited (${code ?? signal}) before answering: ${stderr}`))
      for (const w of stderrWaiters.splice(0)) w.reject(new Error(`child exited before printing ${w.re}: ${stderr}`))
      resolve(exitInfo)
    }),
  )
  readline.createInterface({ input: proc.stdout }).on('line', (line) => {
    const w = waiters.shift()
    if (w) w.resolve(line)
    else queued.push(line)
  })
  proc.stderr.on('data', (d) => {
    stderr += d
    for (let i = stderrWaiters.length - 1; i >= 0; i--) {
      if (stderrWaiters[i].re.test(stderr)) stderrWaiters.splice(i, 1)[0].resolve(stderr)
    }
  })

  function withTimeout(promise, ms, what) {
    let timer
    return Promise.race([
      promise,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}; stderr: ${stderr}`)), ms)
      }),
    ]).finally(() => clearTimeout(timer))
  }

  const child = {
    proc,
    exited,
    stderr: () => stderr,
    /** Next stdout line. */
    nextLine(timeoutMs = 30_000) {
      if (queued.length) return Promise.resolve(queued.shift())
      if (exitInfo) return Promise.reject(new Error(`child already exited: ${stderr}`))
      const p = new Promise((resolve, reject) => waiters.push({ resolve, reject }))
      return withTimeout(p, timeoutMs, 'a line from the child')
    },
    /** Resolves once stderr (all of it so far) matches `re`. */
    waitForStderr(re, timeoutMs = 30_000) {
      if (re.test(stderr)) return Promise.resolve(stderr)
      const p = new Promise((resolve, reject) => stderrWaiters.push({ re, resolve, reject }))
      return withTimeout(p, timeoutMs, `stderr to match ${re}`)
    },
    send(line) {
      proc.stdin.write(line + '\n')
    },
    /** `serve` mode: one command, one JSON answer. */
    async ask(cmd) {
      child.send(cmd)
      return JSON.parse(await child.nextLine())
    },
    async close() {
      if (!exitInfo) {
        proc.stdin.end()
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000)
        await exited
        clearTimeout(t)
      }
    },
  }
  return child
}

/**
 * Start `script` with one JSON argument (`args`) for a "ready" / "go" handshake: the child prints `ready` once
 * loaded and starts its work when it reads `go` (see `waitForGo`). `done` resolves with the exit code and
 * the whole stdout and stderr. `env` is added to this process's; a key set to undefined is left out. The
 * child is killed by `cleanups` if still running.
 */
export function startGoChild(script, args, { env = {}, cleanups }) {
  const childEnv = { ...process.env, ...env }
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete childEnv[k]
  const child = spawn(process.execPath, [script, JSON.stringify(args)], { stdio: ['pipe', 'pipe', 'pipe'], env: childEnv })
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill()
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  // 'close', not 'exit': the last stdout/stderr data may still be on its way when the process has exited.
  const exited = new Promise((resolve) => child.on('close', (code) => resolve(code)))
  const ready = new Promise((resolve, reject) => {
    child.stdout.on('data', () => stdout.includes('ready\n') && resolve())
    exited.then((code) => reject(new Error(`child ${args.id} exited (${code}) before ready: ${stderr}`)))
  })
  return {
    ready,
    go: () => child.stdin.write('go\n'),
    done: exited.then((code) => ({ code, stdout, stderr })),
  }
}

/** In a child started by `startGoChild`: resolves once the parent has written `go`. */
export async function waitForGo() {
  let buf = ''
  await new Promise((resolve) => {
    process.stdin.on('data', (d) => {
      buf += d
      if (buf.includes('go\n')) resolve()
    })
  })
  // Paused here, not inside the 'data' handler: a pause there left stdin reading, and the child never exited.
  process.stdin.pause()
}

/** In a child: `count` sequential chat requests through `client`, each tagged with header `tag: id`; their statuses. */
export async function sendChats(client, url, { count, id, tag }) {
  const statuses = []
  for (let i = 0; i < count; i++) {
    const res = await client.fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', [tag]: String(id) },
      body: JSON.stringify({ model: 'coder-model', messages: [{ role: 'user', content: `child ${id} #${i}` }] }),
    })
    await res.arrayBuffer()
    statuses.push(res.status)
  }
  return statuses
}
