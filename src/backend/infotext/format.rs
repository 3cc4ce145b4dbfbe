//! `processing.create_infotext` of A1111 1.10, for the fields this server produces.

use super::ordered::OrderedMap;
use super::python_text::{json_dumps_str, python_float_repr, python_strip};
use super::InfotextFields;

/// A1111's `quote()`: values containing `,`, `\n` or `:` become JSON strings.
fn quote(value: &str) -> String {
    if value.contains([',', '\n', ':']) {
        json_dumps_str(value)
    } else {
        value.to_string()
    }
}

/// The fixed keys of A1111 1.10's `generation_params` dict before `extra_generation_params`,
/// in order. Keys this server never sets stay `None` (and are not written) but keep their slot,
/// so an extra with that name lands where A1111 would put it.
const FIXED_KEYS: &[&str] = &[
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "FP8 weight",
    "Cache FP16 weight for LoRA",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Token merging ratio hr",
    "Init image hash",
    "RNG",
    "Tiling",
];

/// The infotext, byte-for-byte as A1111 writes it:
/// `f"{prompt}{'\nNegative prompt: ' + neg if neg else ''}\n{params}".strip()` where `params`
/// joins `key: quote(value)` (or just `key` when key == value) with ", " in A1111's key order.
pub fn format_infotext(fields: &InfotextFields) -> String {
    let mut params: OrderedMap<Option<String>> = OrderedMap::new();
    for key in FIXED_KEYS {
        params.set(key, None);
    }
    params.set("Steps", Some(fields.steps.to_string()));
    params.set("Sampler", Some(fields.sampler_name.clone()));
    params.set("Schedule type", Some(fields.schedule_label.clone()));
    params.set("CFG scale", Some(python_float_repr(fields.cfg_scale)));
    params.set("Seed", Some(fields.seed.to_string()));
    params.set("Size", Some(format!("{}x{}", fields.width, fields.height)));
    params.set("Model hash", fields.model_hash.clone());
    params.set("Model", fields.model_name.clone());
    if let Some(variation) = fields.variation.filter(|v| v.strength != 0.0) {
        params.set("Variation seed", Some(variation.seed.to_string()));
        params.set("Variation seed strength", Some(python_float_repr(variation.strength)));
    }
    params.set("Denoising strength", fields.denoising_strength.map(python_float_repr));
    params.set(
        "Clip skip",
        (fields.clip_skip > 1).then(|| fields.clip_skip.to_string()),
    );
    params.set("RNG", fields.rng_label.clone());
    for (key, value) in &fields.extra {
        params.set(key, Some(value.clone()));
    }
    params.set("Version", fields.version.clone());

    let line = params
        .iter()
        .filter_map(|(key, value)| {
            value.as_deref().map(|v| {
                if key == v {
                    key.to_string()
                } else {
                    format!("{key}: {}", quote(v))
                }
            })
        })
        .collect::<Vec<_>>()
        .join(", ");
    let negative = if fields.negative_prompt.is_empty() {
        String::new()
    } else {
        format!("\nNegative prompt: {}", fields.negative_prompt)
    };
    python_strip(&format!("{}{negative}\n{line}", fields.prompt)).to_string()
}
