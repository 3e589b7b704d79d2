import type { Plugin } from '@opencode-ai/plugin'

/**
 * The OpenCode plugin: registers the `qwen-code` provider (coder-model, vision-model and the API-key models),
 * the "Qwen Code (qwen.ai OAuth)" and "Qwen API key (Coding Plan / DashScope)" logins, and a Rust `fetch` that
 * adds the token (or key) and Qwen Code headers, paces, retries and streams. Options: see `QwenOptions` in
 * `opencode-qwen-oauth/api`.
 */
export declare const QwenCodePlugin: Plugin
export default QwenCodePlugin
