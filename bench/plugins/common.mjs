// Shared by the adapters in this folder (not an adapter itself): where the plugins are installed, what OpenCode
// hands a plugin (input, getAuth, provider), and throwaway directories for their home/config files.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const HERE = path.dirname(fileURLToPath(import.meta.url))
export const isBun = typeof globalThis.Bun !== 'undefined'

/** A file of an installed plugin, as an import()-able URL (by path: some `exports` maps point at unshipped files). */
export function pluginFile(name, rel) {
  const file = path.join(HERE, '..', '..', 'target', 'js-plugins', 'node_modules', name, rel)
  if (!fs.existsSync(file)) throw new Error(`${file} missing: run bash bench/plugins/install.sh`)
  return pathToFileURL(file).href
}

/** A fresh temp dir, removed when the process exits (the bench client ends with process.exit). */
const made = []
export function tempDir(tag) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `qwen-js-plugin-${tag}-`))
  if (made.push(dir) === 1) {
    process.on('exit', () => {
      for (const d of made) fs.rmSync(d, { recursive: true, force: true })
    })
  }
  return dir
}

/** The OAuth record OpenCode would hold for the provider, from the credentials file the mock issued. */
export function oauthRecord(ctx) {
  const c = JSON.parse(fs.readFileSync(path.join(ctx.qwenHome, 'oauth_creds.json'), 'utf8'))
  return { type: 'oauth', access: c.access_token, refresh: c.refresh_token, expires: c.expiry_date }
}

/** What OpenCode passes a plugin function: a client whose calls are no-ops, a project dir of its own. */
export function pluginInput() {
  const noop = async () => ({ data: true })
  const dir = tempDir('project')
  return {
    client: { app: { log: noop }, auth: { set: noop }, tui: { showToast: noop } },
    project: { id: 'bench', worktree: dir },
    directory: dir,
    worktree: dir,
    serverUrl: new URL('http://127.0.0.1:4096'),
    $: undefined,
  }
}

/** The provider object loader() gets (the plugins only touch `models`, to zero their cost). */
export const provider = () => ({ id: 'qwen', name: 'Qwen Code', options: {}, models: { 'coder-model': { id: 'coder-model' } } })

/** OAuth base URL of the mock (ctx.baseUrl is `<mock>/v1`). */
export const oauthBase = (ctx) => ctx.baseUrl.replace(/\/v1\/?$/, '')
