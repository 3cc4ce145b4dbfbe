//! Infotexts written by A1111's documented rules (reference a1111.md section 5): formatted from
//! fields, parsed back, and re-formatted byte-for-byte.

use serde_json::Value;

use super::*;

const TXT2IMG: &str = "masterpiece, best quality, 1girl, solo\n\
Negative prompt: lowres, bad anatomy\n\
Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 1234, Size: 512x512, \
Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1";

fn txt2img_fields() -> InfotextFields {
    InfotextFields {
        prompt: "masterpiece, best quality, 1girl, solo".into(),
        negative_prompt: "lowres, bad anatomy".into(),
        steps: 20,
        sampler_name: "Euler a".into(),
        schedule_label: "Automatic".into(),
        cfg_scale: 7.0,
        seed: 1234,
        width: 512,
        height: 512,
        model_hash: Some("6ce0161689".into()),
        model_name: Some("v1-5-pruned-emaonly".into()),
        clip_skip: 1,
        denoising_strength: None,
        rng_label: None,
        variation: None,
        extra: vec![],
        version: Some("v1.10.1".into()),
    }
}

/// Multiline prompt and negative prompt, clip skip, CPU RNG, a quoted Lora hashes value.
const LORA_MULTILINE: &str = "a photo of a cat, <lora:catstyle:0.8>\n\
sitting on a windowsill,\n\
golden hour\n\
Negative prompt: blurry, lowres\n\
watermark\n\
Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3456789012, Size: 768x512, \
Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Clip skip: 2, RNG: CPU, \
Lora hashes: \"catstyle: 0123456789ab, other: ba9876543210\", Version: v1.10.1";

fn lora_fields() -> InfotextFields {
    InfotextFields {
        prompt: "a photo of a cat, <lora:catstyle:0.8>\nsitting on a windowsill,\ngolden hour".into(),
        negative_prompt: "blurry, lowres\nwatermark".into(),
        steps: 30,
        sampler_name: "DPM++ 2M".into(),
        schedule_label: "Karras".into(),
        cfg_scale: 6.5,
        seed: 3456789012,
        width: 768,
        height: 512,
        model_hash: Some("31e35c80fc".into()),
        model_name: Some("sd_xl_base_1.0".into()),
        clip_skip: 2,
        denoising_strength: None,
        rng_label: rng_label(crate::backend::request::RngKind::TorchCpu),
        variation: None,
        extra: vec![(
            "Lora hashes".into(),
            "catstyle: 0123456789ab, other: ba9876543210".into(),
        )],
        version: Some("v1.10.1".into()),
    }
}

/// img2img with variation seed, denoising, no negative prompt, extras including a quoted value
/// with a newline and double quotes, and a hires size pair.
const IMG2IMG_EXTRAS: &str = "portrait of \"the king\", oil painting\n\
Steps: 25, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.5, Seed: 42, Size: 512x768, \
Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Variation seed: 99, Variation seed strength: 0.25, \
Denoising strength: 0.75, Mask blur: 4, Hires upscale: 2.0, Hires resize: 1024x1536, Hires upscaler: Latent, \
Hires prompt: \"castle, \\\"night\\\"\\nstars\", Noise multiplier: 1e-05, Version: v1.10.1";

fn img2img_fields() -> InfotextFields {
    InfotextFields {
        prompt: "portrait of \"the king\", oil painting".into(),
        negative_prompt: String::new(),
        steps: 25,
        sampler_name: "Euler".into(),
        schedule_label: "Automatic".into(),
        cfg_scale: 7.5,
        seed: 42,
        width: 512,
        height: 768,
        model_hash: Some("6ce0161689".into()),
        model_name: Some("v1-5-pruned-emaonly".into()),
        clip_skip: 1,
        denoising_strength: Some(0.75),
        rng_label: rng_label(crate::backend::request::RngKind::Philox),
        variation: Some(VariationSeed {
            seed: 99,
            strength: 0.25,
        }),
        extra: vec![
            ("Mask blur".into(), "4".into()),
            ("Hires upscale".into(), python_float_repr(2.0)),
            ("Hires resize".into(), "1024x1536".into()),
            ("Hires upscaler".into(), "Latent".into()),
            ("Hires prompt".into(), "castle, \"night\"\nstars".into()),
            ("Noise multiplier".into(), python_float_repr(1e-05)),
        ],
        version: Some("v1.10.1".into()),
    }
}

#[test]
fn fields_format_to_the_documented_text() {
    assert_eq!(format_infotext(&txt2img_fields()), TXT2IMG);
    assert_eq!(format_infotext(&lora_fields()), LORA_MULTILINE);
    assert_eq!(format_infotext(&img2img_fields()), IMG2IMG_EXTRAS);
}

#[test]
fn known_infotexts_parse_and_reformat_byte_for_byte() {
    for (text, fields) in [
        (TXT2IMG, txt2img_fields()),
        (LORA_MULTILINE, lora_fields()),
        (IMG2IMG_EXTRAS, img2img_fields()),
    ] {
        let parsed = parse_infotext(text);
        let back = InfotextFields::from_parsed(&parsed).expect("complete infotext");
        assert_eq!(back, fields);
        assert_eq!(format_infotext(&back), text);
    }
}

#[test]
fn parse_splits_prompt_negative_and_params() {
    let parsed = parse_infotext(LORA_MULTILINE);
    assert_eq!(
        parsed.prompt,
        "a photo of a cat, <lora:catstyle:0.8>\nsitting on a windowsill,\ngolden hour"
    );
    assert_eq!(parsed.negative_prompt, "blurry, lowres\nwatermark");
    let keys: Vec<&str> = parsed.params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
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
            "RNG",
            "Lora hashes",
            "Version"
        ]
    );
    assert_eq!(parsed.get("Size-1"), Some("768"));
    assert_eq!(parsed.get("Size-2"), Some("512"));
    assert_eq!(
        parsed.get("Lora hashes"),
        Some("catstyle: 0123456789ab, other: ba9876543210")
    );

    let parsed = parse_infotext(IMG2IMG_EXTRAS);
    assert_eq!(parsed.negative_prompt, "");
    assert_eq!(parsed.get("Hires prompt"), Some("castle, \"night\"\nstars"));
    assert_eq!(parsed.get("Hires resize-1"), Some("1024"));
    assert_eq!(parsed.get("Noise multiplier"), Some("1e-05"));
}

#[test]
fn last_line_needs_three_params_to_be_the_parameters_line() {
    let parsed = parse_infotext("a cat\nSteps: 20, Sampler: Euler");
    assert_eq!(parsed.prompt, "a cat\nSteps: 20, Sampler: Euler");
    assert!(parsed.params.is_empty());

    let parsed = parse_infotext("  a cat  \n\nSteps: 20, Sampler: Euler, Seed: 5\n");
    assert_eq!(parsed.prompt, "a cat\n");
    assert_eq!(parsed.get("Seed"), Some("5"));

    // Only a parameters line: the prompt is empty.
    let parsed = parse_infotext("Steps: 20, Sampler: Euler, Seed: 5");
    assert_eq!(parsed.prompt, "");
    assert_eq!(parsed.params.len(), 3);
}

#[test]
fn parse_quirks_follow_a1111() {
    // Empty values are dropped (Python's v[0] raises), repeated keys keep their first place
    // with the last value, invalid JSON stays raw, "CFG scale: 7" from old versions stays "7".
    let parsed = parse_infotext("x\nSteps: 20, Empty: , Sampler: Euler, Steps: 30, Bad: \"a\\q\", CFG scale: 7");
    let pairs: Vec<(&str, &str)> = parsed.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        pairs,
        [
            ("Steps", "30"),
            ("Sampler", "Euler"),
            ("Bad", "\"a\\q\""),
            ("CFG scale", "7")
        ]
    );
    let fields = InfotextFields::from_parsed(&parse_infotext(
        "x\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64",
    ))
    .expect("fields");
    assert_eq!(fields.cfg_scale, 7.0);
    assert!(format_infotext(&fields).contains("CFG scale: 7.0"));
}

#[test]
fn from_parsed_reports_missing_and_invalid_values() {
    let missing = InfotextFields::from_parsed(&parse_infotext("x\nSteps: 20, Sampler: Euler, CFG scale: 7.0, Seed: 1"));
    assert_eq!(missing, Err(InfotextError::Missing("Size")));
    let invalid = InfotextFields::from_parsed(&parse_infotext("x\nSteps: many, Sampler: Euler, CFG scale: 7.0"));
    assert_eq!(
        invalid,
        Err(InfotextError::Invalid {
            key: "Steps",
            value: "many".into()
        })
    );
}

#[test]
fn formatter_rules() {
    let mut fields = txt2img_fields();
    fields.prompt = String::new();
    fields.negative_prompt = String::new();
    fields.model_hash = None;
    fields.model_name = None;
    fields.version = None;
    // A zero-strength variation seed is not written; key == value is written as the key alone;
    // an extra naming a fixed slot takes that slot; set_extra keeps the first position.
    fields.variation = Some(VariationSeed { seed: 7, strength: 0.0 });
    fields.set_extra("Flag", "Flag");
    fields.set_extra("Emphasis", "No norm");
    fields.set_extra("Tiling", "True");
    fields.set_extra("Flag", "Flag");
    assert_eq!(
        format_infotext(&fields),
        "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 1234, Size: 512x512, \
         Tiling: True, Flag, Emphasis: No norm"
    );
    // Non-ASCII values are quoted without escaping when they contain ':'.
    fields.set_extra("Hires prompt", "猫: 🐱");
    assert!(format_infotext(&fields).ends_with("Hires prompt: \"猫: 🐱\""));
}

#[test]
fn a1111_parameters_adds_defaults_in_order() {
    let params = parse_infotext(TXT2IMG).a1111_parameters();
    let keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "Steps",
            "Sampler",
            "Schedule type",
            "CFG scale",
            "Seed",
            "Size-1",
            "Size-2",
            "Model hash",
            "Model",
            "Version",
            "Prompt",
            "Negative prompt",
            "Clip skip",
            "Hires resize-1",
            "Hires resize-2",
            "Hires sampler",
            "Hires schedule type",
            "Hires checkpoint",
            "Hires prompt",
            "Hires negative prompt",
            "Mask mode",
            "Masked content",
            "Inpaint area",
            "Masked area padding",
            "RNG",
            "Schedule max sigma",
            "Schedule min sigma",
            "Schedule rho",
            "VAE Encoder",
            "VAE Decoder",
            "FP8 weight",
            "Refiner switch by sampling steps"
        ]
    );
    let get = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(get("Steps"), Some(Value::from("20")));
    assert_eq!(get("Clip skip"), Some(Value::from("1")));
    assert_eq!(get("Hires resize-1"), Some(Value::from(0)));
    assert_eq!(get("RNG"), Some(Value::from("GPU")));
    assert_eq!(get("Masked area padding"), Some(Value::from(32)));
    assert_eq!(get("Refiner switch by sampling steps"), Some(Value::Bool(false)));
    assert_eq!(
        get("Prompt"),
        Some(Value::from("masterpiece, best quality, 1girl, solo"))
    );

    let lora = parse_infotext(LORA_MULTILINE).a1111_parameters();
    let get = |k: &str| lora.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(get("Clip skip"), Some(Value::from("2")));
    assert_eq!(get("RNG"), Some(Value::from("CPU")));
    assert_eq!(get("Schedule type"), Some(Value::from("Karras")));
}

#[test]
fn old_first_pass_size_is_converted_like_a1111() {
    let parsed = parse_infotext("x\nSteps: 20, Sampler: Euler, Size: 1024x1024, First pass size: 0x0, Hypernet: anime");
    let params = parsed.a1111_parameters();
    let get = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(get("Size-1"), Some(Value::from(512)));
    assert_eq!(get("Size-2"), Some(Value::from(512)));
    assert_eq!(get("Hires resize-1"), Some(Value::from(1024)));
    assert_eq!(get("Prompt"), Some(Value::from("x<hypernet:anime:1.0>")));
}
