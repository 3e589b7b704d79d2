//! The provider's login methods as OpenCode's menu shows them (`opencode auth login` → provider → method), and
//! the menu paths that messages send users down. One source for Rust's error messages and the JS that builds
//! the menu and the CLI's notes; the texts are macros so the paths can be joined at compile time.

macro_rules! provider_name {
    () => {
        "Qwen Code"
    };
}
macro_rules! oauth_label {
    () => {
        "Qwen Code (qwen.ai OAuth)"
    };
}
macro_rules! api_key_label {
    () => {
        "Qwen API key (Coding Plan / DashScope)"
    };
}

/// The provider's name in OpenCode's lists.
pub const PROVIDER_NAME: &str = provider_name!();
/// The OAuth device login's entry in OpenCode's method list.
pub const OAUTH_LABEL: &str = oauth_label!();
/// The API-key login's entry in OpenCode's method list.
pub const API_KEY_LABEL: &str = api_key_label!();
/// The exact menu path to the OAuth login.
pub const OAUTH_LOGIN_CHOICE: &str = concat!("`opencode auth login` → ", provider_name!(), " → ", oauth_label!());
/// The exact menu path to the API-key login, quoted in every message that sends the user there.
pub const API_KEY_LOGIN_CHOICE: &str = concat!("`opencode auth login` → ", provider_name!(), " → ", api_key_label!());
/// What Qwen did to the OAuth tier. Nothing asks a server for it: status and login say what is known.
pub const OAUTH_SERVICE_NOTE: &str =
    "Qwen ended the free OAuth tier on 2026-04-15; since then its API has refused OAuth tokens (E_TOKEN_REFUSED).";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn menu_paths_are_the_labels_opencode_shows() {
        assert_eq!(API_KEY_LOGIN_CHOICE, "`opencode auth login` → Qwen Code → Qwen API key (Coding Plan / DashScope)");
        assert_eq!(OAUTH_LOGIN_CHOICE, "`opencode auth login` → Qwen Code → Qwen Code (qwen.ai OAuth)");
        assert!(API_KEY_LOGIN_CHOICE.ends_with(API_KEY_LABEL) && OAUTH_LOGIN_CHOICE.contains(PROVIDER_NAME));
    }
}
