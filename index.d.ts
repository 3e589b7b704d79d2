import type { Plugin } from '@opencode-ai/plugin'

/**
 * The OpenCode plugin: registers the `qwen-code` provider (coder-model, vision-model), the
 * "Qwen Code (qwen.ai OAuth)" login, and a Rust `fetch` that adds the token and Qwen Code headers,
 * paces, retries and streams. Options: see `QwenOptions` in `opencode-qwen-oauth/api`.
 */
export declare const QwenCodePlugin: Plugin
export default QwenCodePlugin
