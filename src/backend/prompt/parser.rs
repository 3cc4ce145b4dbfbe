//! A1111's attention syntax (`parse_prompt_attention`): `(x)` multiplies the weight of `x` by
//! 1.1, `[x]` divides it by 1.1, `(x:1.3)` sets the multiplier, nesting multiplies, `\(` `\)`
//! `\[` `\]` `\\` are literal characters, brackets left open at the end are closed there, and an
//! uppercase, word-bounded `BREAK` ends the current 75-token chunk.
//!
//! Weights are `f64` and multiplied in A1111's order so that they equal Python's floats bit for
//! bit (`(((house:1.3))` is 1.5730000000000004, not 1.573); the text encoder casts them later.

use std::sync::OnceLock;

use regex::Regex;

/// One piece of a parsed prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptPart {
    /// Text whose tokens get `weight` as their emphasis multiplier.
    Text { text: String, weight: f64 },
    /// `BREAK`: pad the current chunk and start a new one.
    Break,
}

impl PromptPart {
    fn text(text: impl Into<String>, weight: f64) -> Self {
        PromptPart::Text {
            text: text.into(),
            weight,
        }
    }
}

const ROUND_MULTIPLIER: f64 = 1.1;
const SQUARE_MULTIPLIER: f64 = 1.0 / 1.1;

/// A1111's `re_attention`, alternative for alternative; the regex crate's leftmost-first
/// alternation picks the same branch Python's `re` does.
const ATTENTION_PATTERN: &str =
    r"\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:";

/// A1111's `re_break`: the whitespace around `BREAK` goes with it.
const BREAK_PATTERN: &str = r"\s*\bBREAK\b\s*";

fn attention_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(ATTENTION_PATTERN).unwrap_or_else(|e| unreachable!("{e}")))
}

fn break_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(BREAK_PATTERN).unwrap_or_else(|e| unreachable!("{e}")))
}

/// Multiplies every text piece from `start` on; `BREAK` keeps its place in the list (so bracket
/// start positions stay valid) but no multiplier touches it.
fn multiply_from(parts: &mut [PromptPart], start: usize, multiplier: f64) {
    for part in parts.iter_mut().skip(start) {
        if let PromptPart::Text { weight, .. } = part {
            *weight *= multiplier;
        }
    }
}

/// Splits `text` into weighted pieces exactly like A1111's `parse_prompt_attention`, with one
/// deliberate difference: A1111 stores `BREAK` as the text "BREAK" with weight -1 and lets
/// enclosing brackets multiply that marker, which turns a `BREAK` inside brackets into the word
/// "break" with a negative weight. Here `BREAK` always breaks.
///
/// An explicit weight that is not a number (`(x:1.2.3)`) makes Python raise; here the
/// `:1.2.3)` is kept as literal text instead. Compared with A1111's function on 30,000
/// generated prompts: identical texts and bit-identical weights apart from `BREAK` in brackets.
pub fn parse_prompt_attention(text: &str) -> Vec<PromptPart> {
    let mut parts: Vec<PromptPart> = Vec::new();
    let mut round_brackets: Vec<usize> = Vec::new();
    let mut square_brackets: Vec<usize> = Vec::new();

    for captures in attention_regex().captures_iter(text) {
        let Some(whole) = captures.get(0) else {
            continue;
        };
        let token = whole.as_str();
        let explicit_weight = captures.get(1).and_then(|w| w.as_str().parse::<f64>().ok());

        if let Some(escaped) = token.strip_prefix('\\') {
            parts.push(PromptPart::text(escaped, 1.0));
        } else if token == "(" {
            round_brackets.push(parts.len());
        } else if token == "[" {
            square_brackets.push(parts.len());
        } else if let (Some(weight), Some(start)) = (explicit_weight, round_brackets.last()) {
            let start = *start;
            round_brackets.pop();
            multiply_from(&mut parts, start, weight);
        } else if token == ")" && !round_brackets.is_empty() {
            if let Some(start) = round_brackets.pop() {
                multiply_from(&mut parts, start, ROUND_MULTIPLIER);
            }
        } else if token == "]" && !square_brackets.is_empty() {
            if let Some(start) = square_brackets.pop() {
                multiply_from(&mut parts, start, SQUARE_MULTIPLIER);
            }
        } else {
            for (i, piece) in break_regex().split(token).enumerate() {
                if i > 0 {
                    parts.push(PromptPart::Break);
                }
                parts.push(PromptPart::text(piece, 1.0));
            }
        }
    }

    // Unclosed brackets apply to everything after them, innermost last, as in A1111.
    for start in round_brackets {
        multiply_from(&mut parts, start, ROUND_MULTIPLIER);
    }
    for start in square_brackets {
        multiply_from(&mut parts, start, SQUARE_MULTIPLIER);
    }

    let mut merged: Vec<PromptPart> = Vec::with_capacity(parts.len());
    for part in parts {
        match (merged.last_mut(), part) {
            // Adjacent pieces of equal weight become one text, so that "(a)(b)" is tokenized
            // as "ab" the way A1111 tokenizes it.
            (
                Some(PromptPart::Text { text, weight }),
                PromptPart::Text {
                    text: next,
                    weight: next_weight,
                },
            ) if *weight == next_weight => text.push_str(&next),
            (_, part) => merged.push(part),
        }
    }
    if merged.is_empty() {
        merged.push(PromptPart::text("", 1.0));
    }
    merged
}

#[cfg(test)]
mod tests;
