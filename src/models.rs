//! The model catalogue: what the `qwen-code` provider offers, in OpenCode's config shape.

use serde_json::{json, Value};

pub const PROVIDER_ID: &str = "qwen-code";
pub const PROVIDER_NAME: &str = "Qwen Code";
pub const PROVIDER_NPM: &str = "@ai-sdk/openai-compatible";

pub struct Model {
    pub id: &'static str,
    pub name: &'static str,
    pub context: u64,
    pub output: u64,
    pub image_input: bool,
}

/// OAuth models. Limits are the CLI's (`tokenLimits.ts`); `vision-model` keeps its former limits for
/// users whose configs still name it.
pub const OAUTH_MODELS: &[Model] = &[
    Model { id: "coder-model", name: "Qwen Coder (OAuth)", context: 1_000_000, output: 65_536, image_input: true },
    Model { id: "vision-model", name: "Qwen Vision (OAuth)", context: 131_072, output: 32_768, image_input: true },
];

fn model_config(m: &Model) -> Value {
    let input: Vec<&str> = if m.image_input { vec!["text", "image"] } else { vec!["text"] };
    json!({
        "id": m.id,
        "name": m.name,
        "tool_call": true,
        "attachment": m.image_input,
        "reasoning": false,
        "temperature": true,
        "cost": { "input": 0, "output": 0, "cache_read": 0, "cache_write": 0 },
        "limit": { "context": m.context, "output": m.output },
        "modalities": { "input": input, "output": ["text"] },
    })
}

/// The provider block the plugin's `config` hook registers, with the user's own block (if any) merged over
/// it key by key: every value the user wrote wins, everything else comes from the catalogue.
pub fn provider_config(user: Option<&Value>) -> Value {
    let mut ours = catalogue();
    if let Some(user) = user {
        merge(&mut ours, user);
    }
    ours
}

fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

fn catalogue() -> Value {
    let models: serde_json::Map<String, Value> =
        OAUTH_MODELS.iter().map(|m| (m.id.to_string(), model_config(m))).collect();
    json!({
        "npm": PROVIDER_NPM,
        "name": PROVIDER_NAME,
        "options": {},
        "models": models,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_the_two_oauth_models_with_their_limits() {
        let p = provider_config(None);
        assert_eq!(p["npm"], "@ai-sdk/openai-compatible");
        assert_eq!(p["models"]["coder-model"]["limit"]["context"], 1_000_000);
        assert_eq!(p["models"]["coder-model"]["limit"]["output"], 65_536);
        assert_eq!(p["models"]["vision-model"]["limit"]["context"], 131_072);
        assert_eq!(p["models"]["vision-model"]["limit"]["output"], 32_768);
        assert_eq!(p["models"]["vision-model"]["modalities"]["input"][1], "image");
        assert_eq!(p["models"]["coder-model"]["cost"]["input"], 0);
    }

    #[test]
    fn user_block_wins_key_by_key() {
        let user = json!({
            "name": "My Qwen",
            "options": { "baseURL": "https://example.test/v1" },
            "models": { "coder-model": { "limit": { "output": 8000 } }, "my-model": { "name": "x" } }
        });
        let p = provider_config(Some(&user));
        assert_eq!(p["name"], "My Qwen");
        assert_eq!(p["npm"], "@ai-sdk/openai-compatible");
        assert_eq!(p["options"]["baseURL"], "https://example.test/v1");
        assert_eq!(p["models"]["coder-model"]["limit"]["output"], 8000);
        assert_eq!(p["models"]["coder-model"]["limit"]["context"], 1_000_000);
        assert_eq!(p["models"]["my-model"]["name"], "x");
        assert_eq!(p["models"]["vision-model"]["limit"]["output"], 32_768);
    }
}
