//! The headers the Qwen Code CLI sends, and the ones OpenCode adds that Qwen refuses.

/// `QwenCode/<version> (<platform>; <arch>)` with Node's names for the real OS and CPU.
pub fn user_agent(cli_version: &str) -> String {
    let _ = cli_version;
    todo!("headers::user_agent")
}
