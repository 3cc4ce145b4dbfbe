//! What A1111 does to prompt text before the model sees it, and that clients rely on: `#`
//! comments are stripped (`enable_prompt_comments`), and extra-network tags (`<lora:name:1.0>`,
//! `<hypernet:...>`) are removed from the text the text encoder gets. This worker loads no extra
//! networks, so removed tags are logged as not applied (A1111 logs unknown LoRA names the same
//! way).

use std::sync::LazyLock;

use regex::Regex;

/// A1111's `strip_comments`: whole-line comments first, then comments that end a line.
pub fn strip_comments(text: &str) -> String {
    static WHOLE_LINE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(^|\n)#[^\n]*(\n|$)").expect("valid regex"));
    static LINE_END: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"#[^\n]*(\n|$)").expect("valid regex"));
    let once = WHOLE_LINE.replace_all(text, "\n");
    LINE_END.replace_all(&once, "\n").into_owned()
}

/// A1111's `extra_networks.re_extra_net`: `<kind:args>`.
static EXTRA_NETWORK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<(\w+):([^>]+)>").expect("valid regex"));

/// The prompt without extra-network tags, and the tags that were removed.
pub fn strip_extra_networks(text: &str) -> (String, Vec<String>) {
    let removed: Vec<String> = EXTRA_NETWORK.find_iter(text).map(|m| m.as_str().to_string()).collect();
    (EXTRA_NETWORK.replace_all(text, "").into_owned(), removed)
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
    fn extra_network_tags_are_removed() {
        let (text, removed) = strip_extra_networks("a cat <lora:film:0.8>, <hypernet:x:1> sitting");
        assert_eq!(text, "a cat ,  sitting");
        assert_eq!(removed, vec!["<lora:film:0.8>", "<hypernet:x:1>"]);
    }
}
