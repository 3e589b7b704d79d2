'use strict'
// Baseline for the require() row of bench/run.mjs: a plain JS module with the same exports as api.cjs.
const notNative = () => {
  throw new Error('plain baseline module')
}
module.exports = {
  startLogin: async () => notNative(),
  loadCredentials: () => notNative(),
  getValidCredentials: async () => notNative(),
  createClient: () => ({ fetch: async () => notNative(), credentialsGeneration: () => 0, currentCredentials: () => null }),
  apiBaseUrl: (u) => `https://${u ?? 'portal.qwen.ai'}/v1`,
  userAgent: (v) => `QwenCode/${v ?? '0.24.4'} (${process.platform}; ${process.arch})`,
  providerConfig: (b) => ({ ...b }),
  liftError: (e) => e,
}
