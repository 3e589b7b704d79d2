'use strict'
// The typed JS API of opencode-qwen-oauth for any Node (or Bun) tool: `require('opencode-qwen-oauth/api')`.
// It only adapts JS values to the native core: errors get their `code`, and `fetch(url, init)` is mapped
// onto a native request whose body comes back as a web ReadableStream.

const binding = loadBinding()
const { exchange } = binding
// With pacing off, requests are counted in memory and written to the state file in the background; write
// the rest when the process ends (natural end or process.exit(), Node and Bun alike).
process.once('exit', () => binding.flushQuota?.())

/** The generated loader picks the platform package (musl detected); say plainly which platform lacks one. */
function loadBinding() {
  try {
    return require('./binding.cjs')
  } catch (err) {
    let target = `${process.platform}-${process.arch}`
    if (process.platform === 'linux') {
      const glibc = process.report?.getReport?.()?.header?.glibcVersionRuntime
      target += glibc ? '-gnu' : '-musl'
    }
    const e = new Error(
      `opencode-qwen-oauth has no native addon for ${target}. Prebuilt: linux-x64-gnu, linux-x64-musl, ` +
        `linux-arm64-gnu, darwin-x64, darwin-arm64, win32-x64-msvc. If yours is listed, reinstall with optional ` +
        `dependencies enabled (npm install --include=optional); otherwise build it from a clone of the repository with Rust (npm install && npm run build). ` +
        `(${String(err?.message ?? err).split('\n')[0]})`,
    )
    e.code = 'E_NO_NATIVE_ADDON'
    e.cause = err
    throw e
  }
}

const CODE_PREFIX = /^\[(E_[A-Z_]+)\] /

/** Native errors carry their stable code as a `[E_CODE] ` message prefix; lift it to `err.code`. */
function liftError(err) {
  if (err && typeof err.message === 'string') {
    const m = CODE_PREFIX.exec(err.message)
    if (m) {
      const lifted = new Error(err.message.slice(m[0].length))
      lifted.code = m[1]
      lifted.name = 'QwenError'
      return lifted
    }
  }
  return err
}

function call(fn) {
  try {
    return fn()
  } catch (err) {
    throw liftError(err)
  }
}

async function callAsync(fn) {
  try {
    return await fn()
  } catch (err) {
    throw liftError(err)
  }
}

const OPTION_KEYS = [
  'qwenHome',
  'oauthBaseUrl',
  'cliVersion',
  'minIntervalMs',
  'jitterMinMs',
  'jitterMaxMs',
  'maxRetries',
  'maxWaitMs',
  'debug',
  'trustedHosts',
  'alignRequestBody',
  'dailyLimit',
]

/** Keep the known option keys with usable types; a wrong type is an error the user can act on. */
function normalizeOptions(options) {
  if (options == null) return {}
  if (typeof options !== 'object') {
    throw Object.assign(new Error(`Invalid options: expected an object, got ${typeof options}.`), {
      code: 'E_INVALID_ARG',
    })
  }
  const out = {}
  for (const key of OPTION_KEYS) {
    const v = options[key]
    if (v === undefined || v === null) continue
    const want =
      key === 'debug' || key === 'alignRequestBody' ? 'boolean' : key === 'trustedHosts' ? 'array' : /Ms$|Retries$|Limit$/.test(key) ? 'number' : 'string'
    const ok = want === 'array' ? Array.isArray(v) && v.every((x) => typeof x === 'string') : typeof v === want
    if (!ok) {
      throw Object.assign(new Error(`Invalid option ${key}: expected ${want === 'array' ? 'an array of strings' : 'a ' + want}.`), {
        code: 'E_INVALID_ARG',
      })
    }
    out[key] = v
  }
  return out
}

/**
 * Start a device login. Resolves once chat.qwen.ai handed out a code; `wait()` resolves with the saved
 * credentials after the user approved in the browser. Opening the browser is the caller's choice.
 */
async function startLogin(options) {
  const session = await callAsync(() => binding.startLogin(normalizeOptions(options)))
  return {
    userCode: session.userCode,
    verificationUri: session.verificationUri,
    verificationUriComplete: session.verificationUriComplete,
    expiresIn: session.expiresIn,
    wait: () => callAsync(() => session.wait()),
    cancel: () => session.cancel(),
  }
}

/** Credentials from `oauth_creds.json` (validated), or null when there is no file. */
function loadCredentials(options) {
  return call(() => binding.loadCredentials(normalizeOptions(options)))
}

/** Credentials whose access token is valid now; refreshes once per machine when needed. */
async function getValidCredentials(options, { force = false } = {}) {
  const normalized = call(() => normalizeOptions(options))
  // A token that needs nothing done is answered here, without the async call's trip to the addon's runtime.
  const ready = force ? null : call(() => binding.readyCredentials(normalized))
  return ready ?? callAsync(() => binding.getValidCredentials(normalized, force))
}

function abortError(signal) {
  if (signal && signal.reason !== undefined) return signal.reason
  return new DOMException('This operation was aborted', 'AbortError')
}

/** The request body as the native side takes it: a string as is (no extra copy in JS), else bytes. */
async function bodyBytes(body) {
  if (body == null) return undefined
  if (typeof body === 'string') return body
  if (Buffer.isBuffer(body)) return body
  if (body instanceof ArrayBuffer) return Buffer.from(body)
  if (ArrayBuffer.isView(body)) return Buffer.from(body.buffer, body.byteOffset, body.byteLength)
  // URLSearchParams, Blob, FormData, ReadableStream: let the runtime serialise it as fetch would.
  return Buffer.from(await new Response(body).arrayBuffer())
}

/** A body that is already here; like fetch's, it errors instead if the request is aborted before it is read. */
function abortableBody(bytes, signal) {
  // A default stream (not 'bytes', which would detach the buffer), pulled only when read (highWaterMark 0).
  return new ReadableStream(
    {
      pull(controller) {
        if (signal.aborted) return controller.error(abortError(signal))
        if (bytes.byteLength > 0) controller.enqueue(bytes)
        controller.close()
      },
    },
    { highWaterMark: 0 },
  )
}

const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304])
const EMPTY = new Uint8Array(0)
// Event kinds of QwenClient.setEventCallback (src/lib.rs).
const HEAD = 0
const CHUNK = 1
const FAILED = 2

/** The native quota view with absent fields as null, as the typings say. */
function quotaView(q) {
  if (!q) return null
  const last = q.last429
  return { ...q, last429: last ? { ...last, retryAfterMs: last.retryAfterMs ?? null } : null }
}

// Verdicts of QwenExchange (src/lib.rs): deliver, read the body's start and ask again, ask `judge` with the
// Retry-After headers (judgeStatus only); n >= 0: retry after n ms.
const DELIVER = -1
const READ_PREFIX = -2
const NEED_HEADERS = -3
const PREFIX_LIMIT = 64 * 1024
const DELIVERED_BELOW = binding.DELIVERED_BELOW
const TRANSPORTS = ['native', 'runtime']

/**
 * Which HTTP client moves the bytes. `native`: ours, on the addon's I/O thread (faster than undici under
 * Node). `runtime`: the runtime's own `fetch`, with every decision still made natively; the default under
 * Bun, whose fetch needs no thread hop of ours (bench/RESULTS.md). `QWEN_FETCH_TRANSPORT` overrides.
 */
function pickTransport(transport) {
  const chosen = transport ?? process.env.QWEN_FETCH_TRANSPORT ?? (typeof Bun !== 'undefined' ? 'runtime' : 'native')
  if (!TRANSPORTS.includes(chosen)) {
    const e = new Error(`Unknown transport ${JSON.stringify(chosen)} (from the transport option or QWEN_FETCH_TRANSPORT): use "native" or "runtime".`)
    e.code = 'E_INVALID_ARG'
    e.name = 'QwenError'
    throw e
  }
  return chosen
}

/** Resolves after `ms`, or rejects at once with the abort reason. */
function sleep(ms, signal) {
  if (ms <= 0) return signal?.aborted ? Promise.reject(abortError(signal)) : Promise.resolve()
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
    const onAbort = () => {
      done()
      reject(abortError(signal))
    }
    const timer = setTimeout(() => {
      done()
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** A runtime fetch failure in words, without the URL (it could carry a query). */
function describeFailure(err) {
  const cause = err?.cause
  const parts = [err?.code, cause?.code, cause?.message ?? err?.message].filter((x) => typeof x === 'string' && x)
  return `request failed: ${[...new Set(parts)].join(': ').replace(/https?:\/\/\S+/g, '<url>')}`
}

/** Up to PREFIX_LIMIT bytes of a body; the reader stays open when more follows. */
async function readPrefix(res) {
  const chunks = []
  let size = 0
  if (!res.body) return { prefix: Buffer.alloc(0), reader: null }
  const reader = res.body.getReader()
  try {
    while (size < PREFIX_LIMIT) {
      const { done, value } = await reader.read()
      if (done) return { prefix: Buffer.concat(chunks), reader: null }
      chunks.push(value)
      size += value.byteLength
    }
  } catch (err) {
    // Broke off mid-body: judged without a readable reason, as the native transport does.
    if (err?.name === 'AbortError') throw err
    return { prefix: Buffer.concat(chunks), reader: null, broken: true }
  }
  return { prefix: Buffer.concat(chunks), reader }
}

/** The answer again, its already-read start put back in front of the rest. */
function replay(res, prefix, reader) {
  const body = new ReadableStream({
    start(c) {
      if (prefix.byteLength > 0) c.enqueue(new Uint8Array(prefix))
      if (!reader) c.close()
    },
    async pull(c) {
      const { done, value } = await reader.read()
      if (done) c.close()
      else c.enqueue(value)
    },
    cancel(reason) {
      return reader?.cancel(reason)
    },
  })
  const out = new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers })
  Object.defineProperty(out, 'url', { value: res.url })
  return out
}

function flatHeaders(headers) {
  const flat = []
  headers.forEach((value, key) => flat.push(key, value))
  return flat
}

/**
 * The usual call taken apart at once: a URL (string or URL), a plain header object or none, a string body
 * or none. No Headers object and no promise: under Bun that is a tenth of a request's own cost. The names go
 * as given (the native side compares them case-insensitively and refuses line breaks, as fetch does).
 * null: anything else, for `parseFetchArgs`.
 */
function quickFetchArgs(input, init) {
  const body = init.body
  if (body != null && typeof body !== 'string') return null
  const given = init.headers
  if (given != null && (typeof given !== 'object' || Object.getPrototypeOf(given) !== Object.prototype)) return null
  let url
  if (typeof input === 'string') url = input
  else if (input instanceof URL) url = input.href
  else return null
  const flat = []
  if (given != null) {
    for (const name of Object.keys(given)) {
      const value = given[name]
      if (value !== undefined) flat.push(name, String(value).trim())
    }
  }
  const signal = init.signal
  if (signal?.aborted) throw abortError(signal)
  const givenMethod = init.method
  const method = givenMethod == null ? 'GET' : givenMethod === 'POST' ? 'POST' : String(givenMethod).toUpperCase()
  return { url, method, flat, signal, bytes: body ?? undefined }
}

/** fetch(input, init) taken apart: what both transports start from. */
async function parseFetchArgs(input, init) {
  const request = typeof Request !== 'undefined' && input instanceof Request ? input : null
  const url = request ? request.url : String(input instanceof URL ? input.href : input)
  const method = String(init.method ?? request?.method ?? 'GET').toUpperCase()
  const headers = new Headers(init.headers ?? request?.headers)
  const signal = init.signal ?? request?.signal
  let body = init.body
  if (body === undefined && request && request.body) body = await request.arrayBuffer()
  let contentType
  if (body != null && typeof body === 'object' && !ArrayBuffer.isView(body) && !(body instanceof ArrayBuffer)) {
    contentType = new Response(body).headers.get('content-type')
  }
  if (contentType && !headers.has('content-type')) headers.set('content-type', contentType)
  const bytes = await bodyBytes(body)
  if (signal?.aborted) throw abortError(signal)
  return { url, method, flat: flatHeaders(headers), signal, bytes }
}

/**
 * A configured client. `fetch` is a drop-in `fetch(url, init)`: the native pipeline adds the token and
 * Qwen Code headers, paces, retries and streams; `init.signal` cancels at any stage.
 */
function createClient(options, { apiKey, transport } = {}) {
  const native = call(() => new binding.QwenClient(normalizeOptions(options), apiKey ?? undefined))
  // For the module's `exchange` (src/lib.rs `exchange_binding`): a plain function over this handle.
  const handle = native.handle
  const viaRuntime = pickTransport(transport) === 'runtime'
  const runtimeFetch = globalThis.fetch
  // The runtime transport's last headers, as given and as a `Headers`: the next request usually sends the very
  // same ones (same token, same caller headers), and building them again costs ~4 µs under Bun. Never handed to
  // the caller; the runtime's fetch only reads them.
  let lastJoined = null
  let lastHeaders = null
  /** name\nvalue\nname\nvalue (src/lib.rs `joined`), each name once, as a `Headers`: Bun's fetch takes one
   * 4–5 µs faster than a plain object of the same headers, and the object faster than a list of pairs. */
  function runtimeHeaders(joined) {
    if (joined === lastJoined) return lastHeaders
    const parts = joined.split('\n')
    const headers = new Headers()
    for (let i = 0; i + 1 < parts.length; i += 2) headers.append(parts[i], parts[i + 1])
    lastJoined = joined
    lastHeaders = headers
    return lastHeaders
  }
  // Exchanges delivered without asking (status below DELIVERED_BELOW), still to be forgotten natively: the
  // next `exchange` takes them along (no crossing of their own), or a timer does when no request follows.
  let delivered = []
  let forgetTimer = null
  function takeDelivered() {
    if (delivered.length === 0) return undefined
    const ids = delivered
    delivered = []
    return ids
  }
  function forgetDelivered() {
    forgetTimer = null
    for (const id of takeDelivered() ?? []) native.finish(id)
  }
  // Every request's events come through one native callback: id -> the handler of its next event. The callback
  // holds this map only (not `native`), so a client nobody uses can still be collected.
  const waiting = new Map()
  native.setEventCallback((id, kind, a, b, c, d, e, f) => {
    const handler = waiting.get(id)
    if (handler === undefined) return
    waiting.delete(id)
    handler(kind, a, b, c, d, e, f)
  })
  // A streamed body dropped unread: end its request so the connection does not stay open until exit.
  const unread = new FinalizationRegistry((id) => native.abort(id))

  /** The runtime's fetch moves the bytes; every decision is native (QwenClient.exchange in src/lib.rs). */
  async function fetchViaRuntime(input, init = {}) {
    const { url, method, flat, signal, bytes } = quickFetchArgs(input, init) ?? (await parseFetchArgs(input, init))
    // `id NUL headers NUL body` (src/lib.rs `exchange`); empty headers: not ready yet; empty body: the caller's.
    const done = takeDelivered()
    let begun
    try {
      begun = exchange(handle, url, method, flat, bytes, done)
    } catch (err) {
      if (done) for (const old of done) native.finish(old)
      throw liftError(err)
    }
    const idEnd = begun.indexOf('\0')
    const headersEnd = begun.indexOf('\0', idEnd + 1)
    const id = Number(begun.slice(0, idEnd))
    const body = headersEnd + 1 < begun.length ? begun.slice(headersEnd + 1) : bytes
    let outgoing = headersEnd > idEnd + 1 ? begun.slice(idEnd + 1, headersEnd) : null
    let handedOver = false
    try {
      for (;;) {
        outgoing ??= call(() => native.readyHeaders(id))
        if (outgoing === null) {
          // A refresh or a pacing turn can take a while: an abort ends that native wait at once. (The runtime's
          // fetch and `sleep` take the signal themselves, so the usual request adds no listener.)
          const onAbort = () => native.finish(id)
          signal?.addEventListener('abort', onAbort, { once: true })
          try {
            outgoing = await callAsync(() => native.prepareHeaders(id))
          } catch (err) {
            throw signal?.aborted ? abortError(signal) : err
          } finally {
            signal?.removeEventListener('abort', onAbort)
          }
        }
        const headers = runtimeHeaders(outgoing)
        outgoing = null
        let res
        try {
          res = await runtimeFetch(url, { method, headers, body, signal, redirect: 'manual' })
        } catch (err) {
          if (signal?.aborted) throw abortError(signal)
          await sleep(call(() => native.networkError(id, describeFailure(err))), signal)
          continue
        }
        if (res.status < DELIVERED_BELOW) {
          // Delivered as it is (src/pipeline/exchange.rs `DELIVERED_BELOW`): no question, forgotten later.
          handedOver = true
          delivered.push(id)
          if (forgetTimer === null) {
            forgetTimer = setTimeout(forgetDelivered, 1000)
            forgetTimer.unref?.()
          }
          return res
        }
        let verdict
        let reader = null
        let prefix = null
        // Not for the caller: close its connection.
        const discard = () => (reader ?? res.body)?.cancel().catch(() => {})
        try {
          verdict = call(() => native.judgeStatus(id, res.status))
          if (verdict === NEED_HEADERS) {
            verdict = call(() => native.judge(id, res.status, res.headers.get('retry-after-ms'), res.headers.get('retry-after')))
          }
          if (verdict === READ_PREFIX) {
            const read = await readPrefix(res)
            reader = read.reader
            prefix = read.prefix
            verdict = await callAsync(() => native.judgePrefix(id, res.status, prefix))
          }
        } catch (err) {
          discard()
          throw signal?.aborted ? abortError(signal) : err
        }
        if (verdict === DELIVER) {
          // The native side has forgotten the exchange already.
          handedOver = true
          return prefix === null ? res : replay(res, prefix, reader)
        }
        discard()
        await sleep(verdict, signal)
      }
    } finally {
      if (!handedOver) native.finish(id)
    }
  }

  async function fetchViaNative(input, init = {}) {
    const { url, method, flat, signal, bytes } = quickFetchArgs(input, init) ?? (await parseFetchArgs(input, init))
    const id = call(() => native.start(url, method, flat, bytes))
    // The body's stream controller once there is one: an abort then errors the body.
    let controller = null
    let onAbort = null
    const finish = () => {
      if (onAbort) signal.removeEventListener('abort', onAbort)
    }
    let head
    try {
      head = await new Promise((resolve, reject) => {
        waiting.set(id, (kind, status, statusText, resUrl, flatHeaders, first, done) => {
          if (kind === HEAD) resolve({ status, statusText, resUrl, flatHeaders, first, done })
          else reject(liftError(new Error(status)))
        })
        if (signal) {
          onAbort = () => {
            waiting.delete(id)
            native.abort(id)
            const err = abortError(signal)
            if (controller) controller.error(err)
            reject(err)
          }
          signal.addEventListener('abort', onAbort, { once: true })
        }
      })
    } catch (err) {
      finish()
      throw err
    }

    let responseBody = null
    if (NULL_BODY_STATUS.has(head.status) || method === 'HEAD') {
      if (!head.done) native.abort(id)
      finish()
    } else if (head.done) {
      // A small answer usually arrives with its headers: handed over whole, no stream to pull from.
      finish()
      const whole = head.first ?? EMPTY
      responseBody = signal ? abortableBody(whole, signal) : whole
    } else {
      const end = () => {
        finish()
        unread.unregister(token)
      }
      const token = {}
      responseBody = new ReadableStream(
        {
          start(c) {
            controller = c
            if (head.first) c.enqueue(head.first)
          },
          // One native read per pull; the native side reads one batch ahead, so it is usually there.
          pull(c) {
            return new Promise((resolve) => {
              waiting.set(id, (kind, chunk, done) => {
                if (kind === CHUNK) {
                  if (chunk) c.enqueue(chunk)
                  if (done) {
                    c.close()
                    end()
                  }
                } else {
                  c.error(liftError(new Error(chunk)))
                  end()
                }
                resolve()
              })
              if (!native.pull(id)) {
                waiting.delete(id)
                c.close()
                end()
                resolve()
              }
            })
          },
          cancel() {
            waiting.delete(id)
            native.abort(id)
            end()
          },
        },
        { highWaterMark: 1 },
      )
      unread.register(responseBody, id, token)
    }
    const pairs = []
    const fh = head.flatHeaders
    for (let i = 0; i + 1 < fh.length; i += 2) pairs.push([fh[i], fh[i + 1]])
    const response = new Response(responseBody, { status: head.status, statusText: head.statusText, headers: pairs })
    Object.defineProperty(response, 'url', { value: head.resUrl })
    return response
  }

  return {
    // Chosen once: one async frame per request, not a second one forwarding to it.
    fetch: viaRuntime ? fetchViaRuntime : fetchViaNative,
    /** Changes whenever the OAuth credentials in use change (refresh, reload, login). */
    credentialsGeneration: () => native.credentialsGeneration(),
    /** The OAuth credentials in use, or null (API key, or logged out). */
    currentCredentials: () => call(() => native.currentCredentials()),
    /** The quota view as of this process's latest request (no file access), or null before the first. */
    quota: () => quotaView(native.quota()),
  }
}

module.exports = {
  startLogin,
  loadCredentials,
  getValidCredentials,
  createClient,
  apiBaseUrl: (resourceUrl) => binding.apiBaseUrl(resourceUrl ?? undefined),
  userAgent: (cliVersion) => binding.userAgent(cliVersion ?? undefined),
  providerConfig: (userBlock) => binding.providerConfig(userBlock ?? undefined),
  apiKeyEndpoints: () => binding.apiKeyEndpoints(),
  checkApiKey: (key, endpoint) => binding.checkApiKey(String(key ?? ''), String(endpoint ?? '')),
  defaultApiKeyEndpoint: (key) => binding.defaultApiKeyEndpoint(String(key ?? '')),
  /** The login methods' labels, the menu paths to them and the OAuth tier's note (the texts Rust's errors use). */
  loginMethods: () => binding.loginMethods(),
  /** Write the requests counted in memory (pacing off) to the state file now; also done at process exit. */
  flushQuota: () => binding.flushQuota(),
  /** The machine-wide quota view from the pacing state file: { minute, today, dailyLimit, dayResetsAt, last429 }. */
  quotaStatus: (options) => quotaView(call(() => binding.quotaStatus(normalizeOptions(options)))),
  /** Where this configuration keeps its files: { qwenHome, credentials, lock, state }. */
  qwenPaths: (options) => call(() => binding.qwenPaths(normalizeOptions(options))),
  /** Logout of the shared login: deletes oauth_creds.json under its lock; resolves true when there was one. */
  removeCredentials: (options) => callAsync(() => binding.removeCredentials(normalizeOptions(options))),
  liftError,
}
