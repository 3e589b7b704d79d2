// bench/run.mjs --fetch-module adapter for another build of this package (a regression check in the same run):
// QWEN_BENCH_PREVIOUS names a directory holding its api.cjs, binding.cjs and .node, e.g.
//   git worktree add ../prev <commit> && (cd ../prev && npm ci && npm run build)
//   QWEN_BENCH_PREVIOUS=../prev node bench/run.mjs --only seq,conc,sse --fetch-module bench/previous-build.mjs
// Its row is labelled "previous-build"; each runtime gets that build's default transport, as ours does.
import path from 'node:path'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

export function createFetch(ctx) {
  const dir = process.env.QWEN_BENCH_PREVIOUS
  if (!dir) throw new Error('previous-build: set QWEN_BENCH_PREVIOUS to the directory of the build to compare')
  const api = require(path.resolve(dir, 'api.cjs'))
  const options = { qwenHome: ctx.qwenHome, oauthBaseUrl: ctx.baseUrl.replace(/\/v1$/, ''), minIntervalMs: 0, jitterMinMs: 0, jitterMaxMs: 0 }
  return api.createClient(options).fetch
}
