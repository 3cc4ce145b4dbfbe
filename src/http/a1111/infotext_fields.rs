//! The request field `infotext` (A1111's `apply_infotext`): an infotext is parsed and its values
//! fill every request field the body does not send, and its settings (`Clip skip`, `RNG`, `ENSD`)
//! fill `override_settings` keys not already there. Values stay text; the request model's lax
//! coercion turns `"20"` into 20 as pydantic would.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::errors::A1111Error;
use super::request_model::parse_body;
use crate::backend::infotext::parse_infotext;

/// Infotext labels and the request fields they fill (A1111's `paste_fields` with `api` names).
const FIELDS: &[(&str, &str)] = &[
    ("Prompt", "prompt"),
    ("Negative prompt", "negative_prompt"),
    ("Steps", "steps"),
    ("Sampler", "sampler_name"),
    ("Schedule type", "scheduler"),
    ("CFG scale", "cfg_scale"),
    ("Seed", "seed"),
    ("Size-1", "width"),
    ("Size-2", "height"),
    ("Batch size", "batch_size"),
    ("Variation seed", "subseed"),
    ("Variation seed strength", "subseed_strength"),
    ("Seed resize from-1", "seed_resize_from_w"),
    ("Seed resize from-2", "seed_resize_from_h"),
    ("Denoising strength", "denoising_strength"),
    ("Hires upscale", "hr_scale"),
    ("Hires upscaler", "hr_upscaler"),
    ("Hires steps", "hr_second_pass_steps"),
    ("Hires resize-1", "hr_resize_x"),
    ("Hires resize-2", "hr_resize_y"),
    ("Mask blur", "mask_blur"),
];

/// Infotext labels of options (A1111's `infotext_to_setting_name_mapping`).
const SETTINGS: &[(&str, &str)] = &[("Clip skip", "CLIP_stop_at_last_layers"), ("RNG", "randn_source"), ("ENSD", "eta_noise_seed_delta")];

/// An option value from infotext text: a number when it reads as one.
fn setting_value(text: &str) -> Value {
    if let Ok(int) = text.trim().parse::<i64>() {
        return Value::from(int);
    }
    match text.trim().parse::<f64>() {
        Ok(float) if float.is_finite() => Value::from(float),
        _ => Value::from(text),
    }
}

/// Fill `body` from its `infotext` field, as A1111 does before running.
pub fn expand_infotext(body: &mut Map<String, Value>) {
    let Some(text) = body.get("infotext").and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_string) else {
        return;
    };
    let parsed = parse_infotext(&text).a1111_parameters();
    let lookup = |label: &str| parsed.iter().find(|(k, _)| k == label).map(|(_, v)| v.clone());
    for (label, field) in FIELDS {
        if body.contains_key(*field) {
            continue;
        }
        if let Some(value) = lookup(label) {
            body.insert(field.to_string(), value);
        }
    }
    let mut overrides = match body.remove("override_settings") {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    for (label, setting) in SETTINGS {
        if overrides.contains_key(*setting) {
            continue;
        }
        if let Some(value) = lookup(label) {
            let value = match value {
                Value::String(text) => setting_value(&text),
                other => other,
            };
            overrides.insert(setting.to_string(), value);
        }
    }
    body.insert("override_settings".into(), Value::Object(overrides));
}

/// Parse a txt2img/img2img body: FastAPI's 422 for bad JSON or types, `infotext` applied.
pub fn parse_request<T: DeserializeOwned>(body: &[u8]) -> Result<T, A1111Error> {
    let mut value: Value = crate::http::json_body::parse_value(body).map_err(|e| A1111Error::from_json_body(&e))?;
    if let Value::Object(map) = &mut value {
        expand_infotext(map);
    }
    let bytes = serde_json::to_vec(&value).map_err(|e| A1111Error::internal(e.to_string()))?;
    parse_body(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::a1111::request_model::Txt2ImgRequest;
    use serde_json::json;

    #[test]
    fn infotext_fills_only_what_the_body_does_not_send() {
        let body = json!({
            "steps": 3,
            "infotext": "a fox\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 5.5, Seed: 42, Size: 64x96, Clip skip: 2, RNG: CPU"
        });
        let req: Txt2ImgRequest = parse_request(body.to_string().as_bytes()).expect("parses");
        let c = &req.common;
        assert_eq!((c.prompt(), c.negative_prompt(), c.steps(), c.cfg_scale(), c.seed()), ("a fox", "blurry", 3, 5.5, 42));
        assert_eq!((c.width(), c.height()), (64, 96));
        assert_eq!((c.sampler_name.as_deref(), c.scheduler.as_deref()), (Some("Euler a"), Some("Karras")));
        let overrides = c.override_settings.clone().unwrap_or_default();
        assert_eq!((overrides["CLIP_stop_at_last_layers"].clone(), overrides["randn_source"].clone()), (json!(2), json!("CPU")));
    }
}
