use super::*;

fn text(text: &str, weight: f64) -> PromptPart {
    PromptPart::Text {
        text: text.to_string(),
        weight,
    }
}

// The expected values are A1111's docstring examples of `parse_prompt_attention`, with the
// floats exactly as Python prints them.

#[test]
fn plain_text_is_one_piece_of_weight_one() {
    assert_eq!(
        parse_prompt_attention("normal text"),
        vec![text("normal text", 1.0)]
    );
}

#[test]
fn round_brackets_multiply_by_1_1() {
    assert_eq!(
        parse_prompt_attention("an (important) word"),
        vec![text("an ", 1.0), text("important", 1.1), text(" word", 1.0)]
    );
}

#[test]
fn unbalanced_brackets_close_at_the_end() {
    assert_eq!(
        parse_prompt_attention("(unbalanced"),
        vec![text("unbalanced", 1.1)]
    );
    assert_eq!(
        parse_prompt_attention("a [b"),
        vec![text("a ", 1.0), text("b", 1.0 / 1.1)]
    );
}

#[test]
fn escapes_are_literal_characters() {
    assert_eq!(
        parse_prompt_attention(r"\(literal\]"),
        vec![text("(literal]", 1.0)]
    );
    assert_eq!(
        parse_prompt_attention(r"a \\ b \[c\)"),
        vec![text(r"a \ b [c)", 1.0)]
    );
}

#[test]
fn adjacent_pieces_of_equal_weight_merge() {
    assert_eq!(
        parse_prompt_attention("(unnecessary)(parens)"),
        vec![text("unnecessaryparens", 1.1)]
    );
}

#[test]
fn nesting_explicit_weights_and_unclosed_brackets_combine_like_a1111() {
    assert_eq!(
        parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
        vec![
            text("a ", 1.0),
            text("house", 1.5730000000000004),
            text(" ", 1.1),
            text("on", 1.0),
            text(" a ", 1.1),
            text("hill", 0.55),
            text(", sun, ", 1.1),
            text("sky", 1.4641000000000006),
            text(".", 1.1),
        ]
    );
}

#[test]
fn explicit_weight_allows_spaces_and_signs() {
    assert_eq!(
        parse_prompt_attention("(a: 1.5 ) (b:-0.5) (c:+.25)"),
        vec![
            text("a", 1.5),
            text(" ", 1.0),
            text("b", -0.5),
            text(" ", 1.0),
            text("c", 0.25)
        ]
    );
}

#[test]
fn stray_closers_colons_and_weights_outside_brackets_are_text() {
    assert_eq!(
        parse_prompt_attention("a) b] c:d :1.2)"),
        vec![text("a) b] c:d :1.2)", 1.0)]
    );
}

#[test]
fn a_weight_that_is_not_a_number_stays_text() {
    assert_eq!(
        parse_prompt_attention("(a:1.2.3)"),
        vec![text("a:1.2.3)", 1.1)]
    );
}

#[test]
fn lone_backslash_disappears_like_in_a1111() {
    assert_eq!(parse_prompt_attention(r"a\b"), vec![text("ab", 1.0)]);
}

#[test]
fn break_splits_and_takes_its_whitespace() {
    assert_eq!(
        parse_prompt_attention("a cat BREAK a dog"),
        vec![text("a cat", 1.0), PromptPart::Break, text("a dog", 1.0)]
    );
    // word-bounded and uppercase only
    assert_eq!(
        parse_prompt_attention("BREAKFAST break"),
        vec![text("BREAKFAST break", 1.0)]
    );
    assert_eq!(
        parse_prompt_attention("BREAK x"),
        vec![text("", 1.0), PromptPart::Break, text("x", 1.0)]
    );
}

#[test]
fn break_inside_brackets_still_breaks_and_keeps_no_weight() {
    assert_eq!(
        parse_prompt_attention("(a BREAK b)"),
        vec![text("a", 1.1), PromptPart::Break, text("b", 1.1)]
    );
}

#[test]
fn empty_prompt_is_one_empty_piece() {
    assert_eq!(parse_prompt_attention(""), vec![text("", 1.0)]);
    assert_eq!(parse_prompt_attention("()"), vec![text("", 1.0)]);
}
