// How the shipped Linux x64 (glibc) addon is built, for the builds the benchmarks measure: with the profile of
// the request path in src/hot_path.profdata (profile-guided optimisation; `node bench/hot-path.mjs` makes it).
// The release workflow (.github/workflows/CI.yml) passes the same flag for that target. `npm run build` does
// not: RUSTFLAGS needs an absolute path (each dependency compiles in its own directory), and the profile only
// fits this target; a build without it behaves the same, ~3 µs slower per request under Bun.
import fs from 'node:fs'
import path from 'node:path'

export const PROFILED_TARGET = 'x86_64-unknown-linux-gnu'

/** The profile, when this machine builds the target it was made for (Linux x64, glibc); else null. */
export function releaseProfile(root) {
  const file = path.join(root, 'src', 'hot_path.profdata')
  const glibc = process.report?.getReport?.()?.header?.glibcVersionRuntime
  if (process.platform !== 'linux' || process.arch !== 'x64' || !glibc || !fs.existsSync(file)) return null
  return file
}

/** The environment for a release build (napi or cargo with `--target PROFILED_TARGET`) of the shipped kind. */
export function releaseEnv(root, env = process.env) {
  const profile = releaseProfile(root)
  if (profile === null) return env
  const flags = [env.RUSTFLAGS, `-Cprofile-use=${profile}`].filter(Boolean).join(' ')
  return { ...env, RUSTFLAGS: flags }
}
