// Measurements that take turns: a fresh random order each round, the same in every run, and the median that sums
// up each one's times.

/** A fixed-seed PRNG (mulberry32): the same shuffles in every run. */
export function prng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A shuffled copy (Fisher–Yates). */
export function shuffled(xs, random) {
  const a = [...xs]
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[a[i], a[j]] = [a[j], a[i]]
  }
  return a
}

/** `total` calls of `one()`, `concurrency` of them in flight at a time (the 32-concurrent scenario's shape). */
export async function inFlight(total, concurrency, one) {
  let next = 0
  const worker = async () => {
    while (next < total) {
      next++
      await one()
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
}

/** The median; of an even count, the mean of the two middle values. */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
