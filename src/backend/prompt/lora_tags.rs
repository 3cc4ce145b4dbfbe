//! A1111's extra-network tags: every `<kind:args>` is cut out of the prompt before it is
//! encoded, and `<lora:…>` (or its alias `<lyco:…>`) asks for a LoRA:
//! `<lora:name>`, `<lora:name:te>`, `<lora:name:te:unet>`, `<lora:name:te:unet:dyn>`, or named
//! `<lora:name:te=0.5:unet=1:dyn=16>`. A missing text-encoder multiplier is 1.0 and a missing
//! UNet multiplier equals the text-encoder one.
//!
//! Other kinds (`<hypernet:…>` and anything unknown) are removed from the prompt too, as A1111
//! removes them, and reported so that the caller can say they were not applied.

use std::sync::OnceLock;

use regex::Regex;

/// A LoRA the prompt asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraTag {
    /// File name (without extension) or alias, as written.
    pub name: String,
    pub te_multiplier: f64,
    pub unet_multiplier: f64,
    /// A1111's "dyn" rank limit for DyLoRA files.
    pub dyn_dim: Option<u32>,
}

/// A tag of a kind this server does not apply (`<hypernet:…>`, or a kind nobody knows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedTag {
    pub kind: String,
    /// The tag's first argument (the network name), as written.
    pub name: String,
}

/// A prompt with its extra-network tags taken out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExtractedPrompt {
    /// The prompt with every tag replaced by nothing (the text around it stays as written).
    pub prompt: String,
    pub loras: Vec<LoraTag>,
    pub unsupported: Vec<UnsupportedTag>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("<{kind}:{args}>: {field} {value:?} is not a finite number")]
    BadMultiplier {
        kind: String,
        args: String,
        field: &'static str,
        value: String,
    },
    #[error("<{kind}:{args}>: dyn {value:?} is not a whole number")]
    BadDynDim {
        kind: String,
        args: String,
        value: String,
    },
}

/// A1111's `re_extra_net`.
const EXTRA_NETWORK_PATTERN: &str = r"<(\w+):([^>]+)>";

fn extra_network_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(EXTRA_NETWORK_PATTERN).unwrap_or_else(|e| unreachable!("{e}")))
}

/// Cuts every `<kind:args>` tag out of `prompt`. A1111 only does this for the positive prompt
/// (tags in a negative prompt stay as text), so only call it for that one.
pub fn extract_extra_networks(prompt: &str) -> Result<ExtractedPrompt, TagError> {
    let mut extracted = ExtractedPrompt::default();
    let mut kept_from = 0;
    for captures in extra_network_regex().captures_iter(prompt) {
        let (Some(whole), Some(kind), Some(args)) =
            (captures.get(0), captures.get(1), captures.get(2))
        else {
            continue;
        };
        extracted.prompt.push_str(&prompt[kept_from..whole.start()]);
        kept_from = whole.end();
        let params = TagParams::parse(args.as_str());
        match kind.as_str() {
            "lora" | "lyco" => {
                extracted
                    .loras
                    .push(lora_tag(kind.as_str(), args.as_str(), &params)?)
            }
            other => extracted.unsupported.push(UnsupportedTag {
                kind: other.to_string(),
                name: params
                    .positional
                    .first()
                    .copied()
                    .unwrap_or_default()
                    .to_string(),
            }),
        }
    }
    extracted.prompt.push_str(&prompt[kept_from..]);
    Ok(extracted)
}

/// A1111's `ExtraNetworkParams`: arguments split at `:`; one with exactly one `=` is named.
struct TagParams<'a> {
    positional: Vec<&'a str>,
    named: Vec<(&'a str, &'a str)>,
}

impl<'a> TagParams<'a> {
    fn parse(args: &'a str) -> Self {
        let mut params = Self {
            positional: Vec::new(),
            named: Vec::new(),
        };
        for item in args.split(':') {
            match item.split_once('=') {
                Some((key, value)) if !value.contains('=') => params.named.push((key, value)),
                _ => params.positional.push(item),
            }
        }
        params
    }

    /// The last value given for `key` (a later duplicate overwrites, as in A1111's dict).
    fn named(&self, key: &str) -> Option<&'a str> {
        self.named
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }
}

fn lora_tag(kind: &str, args: &str, params: &TagParams<'_>) -> Result<LoraTag, TagError> {
    let multiplier = |field: &'static str, value: &str| {
        parse_float(value).ok_or_else(|| TagError::BadMultiplier {
            kind: kind.to_string(),
            args: args.to_string(),
            field,
            value: value.to_string(),
        })
    };
    let mut te_multiplier = match params.positional.get(1) {
        Some(value) => multiplier("te", value)?,
        None => 1.0,
    };
    if let Some(value) = params.named("te") {
        te_multiplier = multiplier("te", value)?;
    }
    let mut unet_multiplier = match params.positional.get(2) {
        Some(value) => multiplier("unet", value)?,
        None => te_multiplier,
    };
    if let Some(value) = params.named("unet") {
        unet_multiplier = multiplier("unet", value)?;
    }
    let dyn_text = params
        .named("dyn")
        .or_else(|| params.positional.get(3).copied());
    let dyn_dim = match dyn_text {
        Some(value) => Some(
            value
                .trim()
                .parse::<u32>()
                .map_err(|_| TagError::BadDynDim {
                    kind: kind.to_string(),
                    args: args.to_string(),
                    value: value.to_string(),
                })?,
        ),
        None => None,
    };
    Ok(LoraTag {
        name: params
            .positional
            .first()
            .copied()
            .unwrap_or_default()
            .to_string(),
        te_multiplier,
        unet_multiplier,
        dyn_dim,
    })
}

/// Python's `float()` for what people type: surrounding whitespace allowed; NaN and infinities
/// refused (they would only turn the image into NaNs).
fn parse_float(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests;
