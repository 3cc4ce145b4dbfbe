//! A1111 1.10's `parse_generation_parameters`, and the way back from parsed text to
//! [`InfotextFields`].

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::ordered::OrderedMap;
use super::python_text::python_strip;
use super::{InfotextFields, VariationSeed};

/// A1111's `re_param`: `key: value` with a quoted-string or comma-free value.
static RE_PARAM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#).expect("re_param is a valid regex")
});
/// A1111's `re_imagesize` (`$` also matches before a final newline in Python).
static RE_IMAGE_SIZE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\d+)x(\d+)\n?\z").expect("re_imagesize is a valid regex"));

/// An infotext split into prompt, negative prompt and the parameters line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedInfotext {
    pub prompt: String,
    pub negative_prompt: String,
    /// The parameters line in text order: quoted values JSON-decoded, `WxH` values split into
    /// `<key>-1` / `<key>-2`, a repeated key keeping its first position with the last value.
    pub params: Vec<(String, String)>,
}

/// A required parameter is missing or unreadable when turning parsed text back into fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfotextError {
    #[error("infotext has no {0}")]
    Missing(&'static str),
    #[error("infotext {key} is not valid: {value:?}")]
    Invalid { key: &'static str, value: String },
}

/// `json.loads` of a quoted value; the raw text when it is not a valid JSON string (A1111's
/// `unquote` swallows the error the same way).
fn unquote(value: &str) -> String {
    serde_json::from_str::<String>(value).unwrap_or_else(|_| value.to_string())
}

/// Parse an infotext as A1111's `parse_generation_parameters` does. The last line is the
/// parameters line only when `re_param` matches it at least 3 times; otherwise it belongs to
/// the prompt. Lines are stripped; lines from the first `Negative prompt:` on form the negative
/// prompt.
pub fn parse_infotext(text: &str) -> ParsedInfotext {
    let mut lines: Vec<&str> = python_strip(text).split('\n').collect();
    let mut last_line = lines.pop().unwrap_or("");
    if RE_PARAM.captures_iter(last_line).count() < 3 {
        lines.push(last_line);
        last_line = "";
    }

    let mut prompt_lines: Vec<&str> = Vec::new();
    let mut negative_lines: Vec<&str> = Vec::new();
    let mut in_negative = false;
    for line in lines {
        let mut line = python_strip(line);
        if let Some(rest) = line.strip_prefix("Negative prompt:") {
            in_negative = true;
            line = python_strip(rest);
        }
        if in_negative {
            negative_lines.push(line);
        } else {
            prompt_lines.push(line);
        }
    }

    let mut params: OrderedMap<String> = OrderedMap::new();
    for captures in RE_PARAM.captures_iter(last_line) {
        let key = captures.get(1).map_or("", |m| m.as_str());
        let raw = captures.get(2).map_or("", |m| m.as_str());
        // Python indexes v[0] here and drops an empty value with "Error parsing".
        if raw.is_empty() {
            continue;
        }
        let value = if raw.starts_with('"') && raw.ends_with('"') {
            unquote(raw)
        } else {
            raw.to_string()
        };
        match RE_IMAGE_SIZE.captures(&value) {
            Some(size) => {
                params.set(&format!("{key}-1"), size[1].to_string());
                params.set(&format!("{key}-2"), size[2].to_string());
            }
            None => params.set(key, value),
        }
    }

    ParsedInfotext {
        prompt: prompt_lines.join("\n"),
        negative_prompt: negative_lines.join("\n"),
        params: params.into_vec(),
    }
}

/// A1111's `old_hires_fix_first_pass_dimensions`.
fn old_hires_fix_first_pass_dimensions(width: i64, height: i64) -> (i64, i64) {
    let scale = ((512.0 * 512.0) / (width as f64 * height as f64)).sqrt();
    let round_up_64 = |v: i64| ((scale * v as f64 / 64.0).ceil() as i64) * 64;
    (round_up_64(width), round_up_64(height))
}

/// Python `int(value)` of a parsed value (a string of digits, or an int we set).
fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// A1111's `restore_old_hires_fix_params` with `use_old_hires_fix_width_height` off (default).
fn restore_old_hires_fix_params(res: &mut OrderedMap<Value>) {
    let (Some(first_w), Some(first_h)) = (
        res.get("First pass size-1").and_then(as_int),
        res.get("First pass size-2").and_then(as_int),
    ) else {
        return;
    };
    let width = res.get("Size-1").map_or(Some(512), as_int).unwrap_or(512);
    let height = res.get("Size-2").map_or(Some(512), as_int).unwrap_or(512);
    let (first_w, first_h) = if first_w == 0 || first_h == 0 {
        old_hires_fix_first_pass_dimensions(width, height)
    } else {
        (first_w, first_h)
    };
    res.set("Size-1", Value::from(first_w));
    res.set("Size-2", Value::from(first_h));
    res.set("Hires resize-1", Value::from(width));
    res.set("Hires resize-2", Value::from(height));
}

impl ParsedInfotext {
    /// The value of a parameter as parsed (`Size-1`, `Steps`, `Lora hashes`, ...).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The dict A1111's `parse_generation_parameters` returns (what `/sdapi/v1/png-info` sends
    /// as `parameters`): the parsed values (strings), then `Prompt` and `Negative prompt`, then
    /// the defaults A1111 adds for missing keys (`"Clip skip": "1"`, `"Hires resize-1": 0`,
    /// `"RNG": "GPU"`, `"Schedule type": "Automatic"`, ...), with the old "First pass size"
    /// conversion. Not reproduced: style extraction (no styles are defined here), the
    /// `Emphasis: Original` default (needs the prompt-attention parser), version back-compat
    /// flags, and `infotext_skip_pasting` (empty by default).
    pub fn a1111_parameters(&self) -> Vec<(String, Value)> {
        let mut res: OrderedMap<Value> = OrderedMap::new();
        for (key, value) in &self.params {
            res.set(key, Value::String(value.clone()));
        }
        let mut prompt = self.prompt.clone();
        if let Some(Value::String(hypernet)) = res.get("Hypernet") {
            let strength = match res.get("Hypernet strength") {
                Some(Value::String(s)) => s.clone(),
                _ => "1.0".to_string(),
            };
            prompt.push_str(&format!("<hypernet:{hypernet}:{strength}>"));
        }
        res.set("Prompt", Value::String(prompt));
        res.set("Negative prompt", Value::String(self.negative_prompt.clone()));
        res.set_default("Clip skip", Value::from("1"));
        if !res.contains("Hires resize-1") {
            res.set("Hires resize-1", Value::from(0));
            res.set("Hires resize-2", Value::from(0));
        }
        res.set_default("Hires sampler", Value::from("Use same sampler"));
        res.set_default("Hires schedule type", Value::from("Use same scheduler"));
        res.set_default("Hires checkpoint", Value::from("Use same checkpoint"));
        res.set_default("Hires prompt", Value::from(""));
        res.set_default("Hires negative prompt", Value::from(""));
        res.set_default("Mask mode", Value::from("Inpaint masked"));
        res.set_default("Masked content", Value::from("original"));
        res.set_default("Inpaint area", Value::from("Whole picture"));
        res.set_default("Masked area padding", Value::from(32));
        restore_old_hires_fix_params(&mut res);
        res.set_default("RNG", Value::from("GPU"));
        res.set_default("Schedule type", Value::from("Automatic"));
        res.set_default("Schedule max sigma", Value::from(0));
        res.set_default("Schedule min sigma", Value::from(0));
        res.set_default("Schedule rho", Value::from(0));
        res.set_default("VAE Encoder", Value::from("Full"));
        res.set_default("VAE Decoder", Value::from("Full"));
        res.set_default("FP8 weight", Value::from("Disable"));
        if res.get("FP8 weight") != Some(&Value::from("Disable")) {
            res.set_default("Cache FP16 weight for LoRA", Value::Bool(false));
        }
        res.set_default("Refiner switch by sampling steps", Value::Bool(false));
        res.into_vec()
    }
}

fn required<'a>(parsed: &'a ParsedInfotext, key: &'static str) -> Result<&'a str, InfotextError> {
    parsed.get(key).ok_or(InfotextError::Missing(key))
}

fn number<T: std::str::FromStr>(key: &'static str, value: &str) -> Result<T, InfotextError> {
    value.trim().parse().map_err(|_| InfotextError::Invalid {
        key,
        value: value.to_string(),
    })
}

/// Parameters [`InfotextFields`] holds in named fields; every other key goes to `extra`.
const MODELLED_KEYS: &[&str] = &[
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Seed",
    "Size-1",
    "Size-2",
    "Model hash",
    "Model",
    "Clip skip",
    "Denoising strength",
    "RNG",
    "Variation seed",
    "Variation seed strength",
    "Version",
];

impl InfotextFields {
    /// Fields from parsed text: the inverse of [`super::format_infotext`] for infotexts written
    /// by A1111's rules. `Steps`, `Sampler`, `CFG scale`, `Seed` and `Size` are required; a
    /// missing `Schedule type` is "Automatic" and a missing `Clip skip` is 1 (A1111's defaults).
    /// Other keys become `extra` in text order, split `WxH` pairs joined back (`Hires resize`).
    pub fn from_parsed(parsed: &ParsedInfotext) -> Result<InfotextFields, InfotextError> {
        let optional_f64 = |key: &'static str| parsed.get(key).map(|v| number::<f64>(key, v)).transpose();
        let variation = match parsed.get("Variation seed") {
            Some(seed) => Some(VariationSeed {
                seed: number("Variation seed", seed)?,
                strength: optional_f64("Variation seed strength")?.unwrap_or(0.0),
            }),
            None => None,
        };

        let mut extra = Vec::new();
        for (key, value) in &parsed.params {
            if MODELLED_KEYS.contains(&key.as_str()) {
                continue;
            }
            if let Some(base) = key.strip_suffix("-1") {
                if let Some(second) = parsed.get(&format!("{base}-2")) {
                    extra.push((base.to_string(), format!("{value}x{second}")));
                    continue;
                }
            }
            if let Some(base) = key.strip_suffix("-2") {
                if parsed.get(&format!("{base}-1")).is_some() {
                    continue;
                }
            }
            extra.push((key.clone(), value.clone()));
        }

        Ok(InfotextFields {
            prompt: parsed.prompt.clone(),
            negative_prompt: parsed.negative_prompt.clone(),
            steps: number("Steps", required(parsed, "Steps")?)?,
            sampler_name: required(parsed, "Sampler")?.to_string(),
            schedule_label: parsed.get("Schedule type").unwrap_or("Automatic").to_string(),
            cfg_scale: number("CFG scale", required(parsed, "CFG scale")?)?,
            seed: number("Seed", required(parsed, "Seed")?)?,
            width: number(
                "Size",
                required(parsed, "Size-1").map_err(|_| InfotextError::Missing("Size"))?,
            )?,
            height: number(
                "Size",
                required(parsed, "Size-2").map_err(|_| InfotextError::Missing("Size"))?,
            )?,
            model_hash: parsed.get("Model hash").map(str::to_string),
            model_name: parsed.get("Model").map(str::to_string),
            clip_skip: parsed
                .get("Clip skip")
                .map(|v| number("Clip skip", v))
                .transpose()?
                .unwrap_or(1),
            denoising_strength: optional_f64("Denoising strength")?,
            rng_label: parsed.get("RNG").map(str::to_string),
            variation,
            extra,
            version: parsed.get("Version").map(str::to_string),
        })
    }
}
