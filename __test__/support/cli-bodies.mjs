// Chat-completions bodies and what the official Qwen Code CLI 0.24.4 makes of them: its own DashScope
// provider (`DashScopeOpenAICompatibleProvider.buildRequest`, loaded from the pinned devDependency's bundle)
// is run on each body, with sessionId "SID" and promptId "PID" as placeholders.
//
//   import { CASES, cliBuild } from './support/cli-bodies.mjs'
//   node __test__/support/cli-bodies.mjs > __test__/fixtures/cli-bodies.json   (regenerates the fixture the
//   Rust unit tests in src/pipeline/body.rs byte-check against; __test__/body.test.mjs checks it is current)
//
// Bodies are shaped as the CLI's pipeline hands them to the provider (streaming ones carry stream_options,
// as OpenCode's do too).
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
/** The bundle chunk holding `packages/core/src/core/openaiContentGenerator/provider/dashscope.ts`. */
const PROVIDER_CHUNK = path.join(ROOT, 'node_modules/@qwen-code/qwen-code/chunks/chunk-XWCLIEJ2.js')

const streamOpts = { stream: true, stream_options: { include_usage: true } }

export const CASES = {
  // OpenCode's main request, shortened: system string, user string, tools, streaming.
  stream_tools: {
    model: 'coder-model',
    max_tokens: 32000,
    messages: [
      { role: 'system', content: 'You are opencode.' },
      { role: 'user', content: 'hi' },
    ],
    tools: [
      { type: 'function', function: { name: 'bash', parameters: {} } },
      { type: 'function', function: { name: 'read', parameters: {} } },
    ],
    tool_choice: 'auto',
    ...streamOpts,
  },
  // Non-streaming: only the system message is marked.
  nonstream: {
    model: 'coder-model',
    max_tokens: 32000,
    messages: [
      { role: 'system', content: 'You are opencode.' },
      { role: 'user', content: 'hi' },
    ],
    tools: [{ type: 'function', function: { name: 'bash' } }],
    stream: false,
  },
  // A tool continuation on a key-path model without vision: the tool result is the last message.
  continuation: {
    model: 'qwen3-coder-plus',
    messages: [
      { role: 'system', content: 'sys' },
      { role: 'user', content: 'run ls' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'c1', type: 'function', function: { name: 'bash', arguments: '{"cmd":"ls"}' } }],
      },
      { role: 'tool', tool_call_id: 'c1', content: 'a.txt' },
    ],
    tools: [{ type: 'function', function: { name: 'bash' } }],
    ...streamOpts,
  },
  // The last message is an assistant tool call (content null): nothing to mark there.
  null_last: {
    model: 'coder-model',
    messages: [
      { role: 'system', content: 'sys' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'bash', arguments: '{}' } }] },
    ],
    ...streamOpts,
  },
  // Content arrays: the last part gets the marker, whatever its type (here an image).
  image_last: {
    model: 'qwen3.5-plus',
    messages: [
      { role: 'system', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] },
      {
        role: 'user',
        content: [
          { type: 'text', text: 'what is this?' },
          { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
        ],
      },
    ],
    ...streamOpts,
  },
  // GLM without tools: text-only arrays flattened, no markers, no metadata.
  glm_plain: {
    model: 'glm-5',
    messages: [
      { role: 'system', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] },
      { role: 'user', content: [{ type: 'text', text: 'x' }, { type: 'image_url', image_url: { url: 'u' } }] },
    ],
    ...streamOpts,
  },
  // GLM with tools: markers as for any model; still no metadata (not a qwen model).
  glm_tools: {
    model: 'GLM-4.7',
    messages: [
      { role: 'system', content: 'sys' },
      { role: 'user', content: 'x' },
    ],
    tools: [{ type: 'function', function: { name: 't' } }],
    ...streamOpts,
  },
  // No system message, not streaming, not qwen: only preserve_thinking.
  kimi_nonstream: {
    model: 'kimi-k2.5',
    messages: [{ role: 'user', content: 'no system here' }],
    tools: [{ type: 'function', function: { name: 't' } }],
    stream: false,
  },
  // Keys already present keep their place; an empty system string still becomes a marked part;
  // non-ASCII, escapes and floats survive.
  existing_keys: {
    preserve_thinking: false,
    model: 'coder-model',
    metadata: { x: 1 },
    messages: [
      { role: 'system', content: '' },
      { role: 'user', content: 'é "q" \u2028 \\ / \u0001 😀' },
    ],
    temperature: 0.1,
    top_p: 0.95,
    ...streamOpts,
  },
  // OpenCode's title request (no tools, its fixed first user message).
  title: {
    model: 'coder-model',
    max_tokens: 32000,
    temperature: 0.5,
    messages: [
      { role: 'system', content: 'You are a title generator. You output ONLY a thread title. Nothing else.' },
      { role: 'user', content: 'Generate a title for this conversation:\n' },
      { role: 'user', content: 'hi' },
    ],
    ...streamOpts,
  },
}

let provider
async function providerClass() {
  provider ??= (await import(pathToFileURL(PROVIDER_CHUNK).href)).DashScopeOpenAICompatibleProvider
  return provider
}

/**
 * The CLI's body for `body` (an object), as the JSON text its OpenAI SDK sends. `authType` is the CLI's
 * (`qwen-oauth` or `openai` for keys): the DashScope provider treats both the same. samplingParams is set so
 * that the CLI leaves max_tokens alone (OpenCode chooses it), as our rewrite does.
 */
export async function cliBuild(body, { sessionId = 'SID', promptId = 'PID', authType = 'qwen-oauth' } = {}) {
  const Provider = await providerClass()
  const generatorConfig = { authType, model: body.model, samplingParams: {} }
  const cliConfig = {
    getSessionId: () => sessionId,
    getChannel: () => undefined,
    getContentGeneratorConfig: () => generatorConfig,
    getCliVersion: () => '0.24.4',
    getProxy: () => undefined,
  }
  return JSON.stringify(new Provider(generatorConfig, cliConfig).buildRequest(structuredClone(body), promptId))
}

/** The fixture: every case's input text and the CLI's output text. */
export async function fixture() {
  const out = {}
  for (const [name, body] of Object.entries(CASES)) out[name] = { in: JSON.stringify(body), out: await cliBuild(body) }
  return out
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.stdout.write(JSON.stringify(await fixture(), null, 2) + '\n')
}
