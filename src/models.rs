//! The model catalogue: what the `qwen-code` provider offers, in OpenCode's config shape.

use serde_json::{json, Value};

use crate::api_key::Plan;

pub const PROVIDER_ID: &str = "qwen-code";
pub use crate::login_methods::PROVIDER_NAME;
pub const PROVIDER_NPM: &str = "@ai-sdk/openai-compatible";

pub struct Model {
    pub id: &'static str,
    pub name: &'static str,
    pub context: u64,
    pub output: u64,
    pub image_input: bool,
}

/// OAuth models. Limits are the CLI's (`tokenLimits.ts`); `vision-model` keeps its former limits for
/// users whose configs still name it. On the API-key path both are aliases (see `key_alias`).
pub const OAUTH_MODELS: &[Model] = &[
    Model {
        id: "coder-model",
        name: "Qwen Coder (OAuth; default model with an API key)",
        context: 1_000_000,
        output: 65_536,
        image_input: true,
    },
    Model { id: "vision-model", name: "Qwen Vision (OAuth)", context: 131_072, output: 32_768, image_input: true },
];

/// Models served to API keys: the Qwen Code CLI 0.24.4 Coding Plan preset (`MODELSTUDIO_MODELS` in
/// `providers/presets/alibaba-coding-plan.ts`, same order), with the context and output limits its
/// `tokenLimits.ts` gives each id and image input where its `modalityDefaults.ts` says so.
pub const KEY_MODELS: &[Model] = &[
    Model { id: "qwen3.5-plus", name: "Qwen3.5 Plus (API key)", context: 1_000_000, output: 65_536, image_input: true },
    Model { id: "qwen3.6-plus", name: "Qwen3.6 Plus (API key)", context: 1_000_000, output: 65_536, image_input: true },
    Model { id: "qwen3.7-plus", name: "Qwen3.7 Plus (API key)", context: 1_000_000, output: 65_536, image_input: true },
    Model { id: "glm-5", name: "GLM-5 (API key)", context: 202_752, output: 131_072, image_input: false },
    Model { id: "kimi-k2.5", name: "Kimi K2.5 (API key)", context: 262_144, output: 32_768, image_input: true },
    Model { id: "MiniMax-M2.5", name: "MiniMax M2.5 (API key)", context: 196_608, output: 65_536, image_input: false },
    Model {
        id: "qwen3-coder-plus",
        name: "Qwen3 Coder Plus (API key)",
        context: 1_000_000,
        output: 32_768,
        image_input: false,
    },
    Model {
        id: "qwen3-coder-next",
        name: "Qwen3 Coder Next (API key)",
        context: 262_144,
        output: 32_768,
        image_input: false,
    },
    Model {
        id: "qwen3-max-2026-01-23",
        name: "Qwen3 Max 2026-01-23 (API key)",
        context: 262_144,
        output: 32_768,
        image_input: false,
    },
    Model { id: "glm-4.7", name: "GLM-4.7 (API key)", context: 202_752, output: 16_384, image_input: false },
];

/// The model a key-path request for an OAuth model id really asks for, so configs naming `coder-model`
/// (or the retired `vision-model`) keep working with an API key: the default model of the plan as the
/// CLI picks it (the first model of its preset): `qwen3.5-plus` on the Coding Plan, `qwen3.6-plus` on
/// DashScope (its "Standard API Key" preset). Both take images, like `coder-model`.
pub fn key_alias(plan: Plan, model: &str) -> Option<&'static str> {
    if !OAUTH_MODELS.iter().any(|m| m.id == model) {
        return None;
    }
    Some(match plan {
        Plan::CodingPlan => "qwen3.5-plus",
        Plan::DashScope => "qwen3.6-plus",
    })
}

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
        OAUTH_MODELS.iter().chain(KEY_MODELS).map(|m| (m.id.to_string(), model_config(m))).collect();
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
    fn key_models_carry_the_cli_limits() {
        let p = provider_config(None);
        let limit = |id: &str| {
            (
                p["models"][id]["limit"]["context"].as_u64().unwrap(),
                p["models"][id]["limit"]["output"].as_u64().unwrap(),
            )
        };
        assert_eq!(limit("qwen3.5-plus"), (1_000_000, 65_536));
        assert_eq!(limit("qwen3-coder-plus"), (1_000_000, 32_768));
        assert_eq!(limit("qwen3-coder-next"), (262_144, 32_768));
        assert_eq!(limit("glm-5"), (202_752, 131_072));
        assert_eq!(limit("glm-4.7"), (202_752, 16_384));
        assert_eq!(limit("MiniMax-M2.5"), (196_608, 65_536));
        assert_eq!(limit("kimi-k2.5"), (262_144, 32_768));
        assert_eq!(limit("qwen3-max-2026-01-23"), (262_144, 32_768));
        assert_eq!(p["models"]["qwen3.5-plus"]["modalities"]["input"], json!(["text", "image"]));
        assert_eq!(p["models"]["qwen3-coder-plus"]["modalities"]["input"], json!(["text"]));
        assert_eq!(p["models"]["qwen3-coder-plus"]["attachment"], false);
        assert_eq!(p["models"].as_object().unwrap().len(), OAUTH_MODELS.len() + KEY_MODELS.len());
        // The ids are unique: a key model never shadows an OAuth one.
        for m in KEY_MODELS {
            assert!(!OAUTH_MODELS.iter().any(|o| o.id == m.id), "{}", m.id);
        }
    }

    #[test]
    fn oauth_ids_alias_to_the_plans_default_model() {
        assert_eq!(key_alias(Plan::CodingPlan, "coder-model"), Some("qwen3.5-plus"));
        assert_eq!(key_alias(Plan::DashScope, "coder-model"), Some("qwen3.6-plus"));
        assert_eq!(key_alias(Plan::CodingPlan, "vision-model"), Some("qwen3.5-plus"));
        assert_eq!(key_alias(Plan::CodingPlan, "qwen3-coder-plus"), None);
        assert_eq!(key_alias(Plan::DashScope, "Coder-Model"), None, "ids are exact");
        // Every alias target is a registered key model that takes images, as coder-model does.
        for plan in [Plan::CodingPlan, Plan::DashScope] {
            let target = key_alias(plan, "coder-model").unwrap();
            assert!(KEY_MODELS.iter().any(|m| m.id == target && m.image_input), "{target}");
        }
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
