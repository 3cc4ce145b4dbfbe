//! What A1111 does to prompt text before the model sees it, and that clients rely on: `#`
//! comments are stripped (`enable_prompt_comments`), and extra-network tags are taken out of the
//! text the text encoder gets: `<lora:name:te[:unet]>` (and `<lyco:...>`, its alias) become the
//! job's LoRAs, parsed as A1111's built-in Lora extension parses them; other kinds
//! (`<hypernet:...>`) are not supported and are reported.

use std::sync::LazyLock;

use regex::Regex;

use crate::backend::request::LoraSpec;

/// A1111's `strip_comments`: whole-line comments first, then comments that end a line.
pub fn strip_comments(text: &str) -> String {
    static WHOLE_LINE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(^|\n)#[^\n]*(\n|$)").expect("valid regex"));
    static LINE_END: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"#[^\n]*(\n|$)").expect("valid regex"));
    let once = WHOLE_LINE.replace_all(text, "\n");
    LINE_END.replace_all(&once, "\n").into_owned()
}

/// A1111's `extra_networks.re_extra_net`: `<kind:args>`.
static EXTRA_NETWORK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<(\w+):([^>]+)>").expect("valid regex"));

/// A prompt with its extra-network tags taken out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExtraNetworks {
    /// The text without any tag.
    pub text: String,
    pub loras: Vec<LoraSpec>,
    /// Tags that were removed but cannot be applied (unsupported kinds, unreadable numbers).
    pub unsupported: Vec<String>,
}

/// A1111's `ExtraNetworkParams` + the Lora extension's `activate`: `name[:te[:unet]]`, where
/// `te=`/`unet=` may also be given by name; te defaults to 1.0 and unet to te.
fn lora_spec(args: &str) -> Option<LoraSpec> {
    let items: Vec<&str> = args.split(':').collect();
    let positional: Vec<&str> = items.iter().copied().filter(|i| !i.contains('=')).collect();
    let named = |key: &str| items.iter().find_map(|i| i.split_once('=').filter(|(k, _)| k.trim() == key).map(|(_, v)| v.trim()));
    let number = |text: &str| text.trim().parse::<f64>().ok().filter(|v| v.is_finite());
    let name = positional.first()?.trim();
    let te = match named("te").or(positional.get(1).copied()) {
        Some(text) => number(text)?,
        None => 1.0,
    };
    let unet = match named("unet").or(positional.get(2).copied()) {
        Some(text) => number(text)?,
        None => te,
    };
    (!name.is_empty()).then(|| LoraSpec { name_or_path: name.to_string(), unet_strength: unet, te_strength: te })
}

/// Take the extra-network tags out of a prompt.
pub fn extra_networks(text: &str) -> ExtraNetworks {
    let mut out = ExtraNetworks { text: EXTRA_NETWORK.replace_all(text, "").into_owned(), ..Default::default() };
    for tag in EXTRA_NETWORK.captures_iter(text) {
        let (kind, args) = (&tag[1], &tag[2]);
        match (kind, lora_spec(args)) {
            ("lora" | "lyco", Some(spec)) => out.loras.push(spec),
            _ => out.unsupported.push(tag[0].to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_stripped_like_a1111() {
        assert_eq!(strip_comments("a cat # fluffy\nblue sky"), "a cat \nblue sky");
        assert_eq!(strip_comments("# note\na cat"), "\na cat");
        assert_eq!(strip_comments("no comment"), "no comment");
    }

    #[test]
    fn lora_tags_become_loras_and_other_tags_are_reported() {
        let parsed = extra_networks("a cat <lora:film:0.8>, <hypernet:x:1> <lyco:grain> <lora:both:0.5:0.7> <lora:named:unet=0.3:te=0.2> <lora:bad:x>");
        assert_eq!(parsed.text, "a cat ,     ");
        assert_eq!(
            parsed.loras,
            vec![
                LoraSpec { name_or_path: "film".into(), unet_strength: 0.8, te_strength: 0.8 },
                LoraSpec { name_or_path: "grain".into(), unet_strength: 1.0, te_strength: 1.0 },
                LoraSpec { name_or_path: "both".into(), unet_strength: 0.7, te_strength: 0.5 },
                LoraSpec { name_or_path: "named".into(), unet_strength: 0.3, te_strength: 0.2 },
            ]
        );
        assert_eq!(parsed.unsupported, vec!["<hypernet:x:1>", "<lora:bad:x>"]);
    }
}
