// What goes on the wire, for the references the benchmarks time ours against:
// - `wireBytes`: what our runtime transport hands the runtime's fetch for one request: the Qwen Code CLI's headers
//   (with the bearer token) and the CLI-aligned body, taken from the native side's `exchange` (which is then
//   forgotten). Shared by bench/client.mjs (the "same bytes" reference) and bench/profile.mjs.
// - `postRefresh`: a bare refresh grant, as the CLI POSTs it. Shared by bench/client.mjs (the refresh row's baseline
//   and floor) and bench/ab-refresh.mjs.

/** `{ headers, body }` for `fetch`: headers a `Headers`, as the runtime transport passes them. */
export function wireBytes(binding, native, url, method, body) {
  // `id NUL headers NUL body` (src/lib.rs `exchange_binding`); headers name\nvalue\nname\nvalue; an empty body: the caller's.
  const [id, joined, aligned] = binding.exchange(native.handle, url, method, ['content-type', 'application/json'], body).split('\0')
  native.finish(Number(id))
  const parts = joined.split('\n')
  const headers = new Headers()
  for (let i = 0; i + 1 < parts.length; i += 2) headers.append(parts[i], parts[i + 1])
  return { headers, body: aligned || body }
}

/** The refresh grant POSTed with the runtime's fetch, as the CLI sends it; the answer's JSON (never printed). */
export async function postRefresh(oauthBaseUrl, clientId, refreshToken, who) {
  const body = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId })
  const res = await fetch(`${oauthBaseUrl}/api/v1/oauth2/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body,
  })
  const j = await res.json()
  if (!j.access_token) throw new Error(`${who} refresh failed: HTTP ${res.status}`)
  return j
}
