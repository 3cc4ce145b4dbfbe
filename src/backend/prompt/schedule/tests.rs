use super::*;

fn schedule(prompt: &str) -> Vec<(usize, String)> {
    prompt_schedule(prompt, 10)
        .into_iter()
        .map(|entry| (entry.end_at_step, entry.text))
        .collect()
}

fn expect(entries: &[(usize, &str)]) -> Vec<(usize, String)> {
    entries
        .iter()
        .map(|(end, text)| (*end, text.to_string()))
        .collect()
}

// A1111's docstring examples of get_learned_conditioning_prompt_schedules (10 steps).

#[test]
fn a_prompt_without_syntax_is_one_entry() {
    assert_eq!(schedule("test"), expect(&[(10, "test")]));
}

#[test]
fn to_when_adds_text_after_an_absolute_step() {
    assert_eq!(schedule("a [b:3]"), expect(&[(3, "a "), (10, "a b")]));
    assert_eq!(schedule("a [b: 3]"), expect(&[(3, "a "), (10, "a b")]));
    assert_eq!(
        schedule("a [[[b]]:2]"),
        expect(&[(2, "a "), (10, "a [[b]]")])
    );
    assert_eq!(schedule("[(a:2):3]"), expect(&[(3, ""), (10, "(a:2)")]));
}

#[test]
fn from_to_when_keeps_the_spaces_around_both_texts() {
    assert_eq!(
        schedule("a [b : c : 1] d"),
        expect(&[(1, "a b  d"), (10, "a  c  d")])
    );
}

#[test]
fn edits_nest() {
    assert_eq!(
        schedule("a[b:[c:d:2]:1]e"),
        expect(&[(1, "abe"), (2, "ace"), (10, "ade")])
    );
}

#[test]
fn unbalanced_brackets_are_literal() {
    assert_eq!(schedule("a [unbalanced"), expect(&[(10, "a [unbalanced")]));
    assert_eq!(
        schedule("((a][:b:c [d:3]"),
        expect(&[(3, "((a][:b:c "), (10, "((a][:b:c d")])
    );
}

#[test]
fn a_when_with_a_dot_is_a_fraction_of_the_steps() {
    assert_eq!(
        schedule("a [b:.5] c"),
        expect(&[(5, "a  c"), (10, "a b c")])
    );
    // 1.5 * 10 is capped at the last step, so "b" never shows.
    assert_eq!(schedule("a [b:1.5] c"), expect(&[(10, "a  c")]));
}

#[test]
fn alternation_cycles_every_step() {
    let expected: Vec<(usize, String)> = (1..=10)
        .map(|step| {
            (
                step,
                if step % 2 == 1 { "a" } else { "(b:1.1)" }.to_string(),
            )
        })
        .collect();
    assert_eq!(schedule("[a|(b:1.1)]"), expected);
}

#[test]
fn alternation_allows_empty_options() {
    let expected: Vec<(usize, String)> = (1..=10)
        .map(|step| {
            (
                step,
                if step % 2 == 1 { "female" } else { "male" }.to_string(),
            )
        })
        .collect();
    assert_eq!(schedule("[fe|]male"), expected);
    let expected: Vec<(usize, String)> = (1..=10)
        .map(|step| {
            (
                step,
                if step % 4 == 1 { "female" } else { "male" }.to_string(),
            )
        })
        .collect();
    assert_eq!(schedule("[fe|||]male"), expected);
}

// Cases checked against A1111's lark grammar (lark 1.1.2, the version A1111 pins).

#[test]
fn prompts_the_grammar_rejects_are_used_literally() {
    // A1111's docstring claims a schedule for this one, but its parser rejects the `|` inside an
    // edit and falls back to the literal prompt.
    assert_eq!(
        schedule("a [{b|d{:.5] c"),
        expect(&[(10, "a [{b|d{:.5] c")])
    );
    assert_eq!(schedule("a | b [c:2]"), expect(&[(10, "a | b [c:2]")]));
    assert_eq!(schedule("a [b|c"), expect(&[(10, "a [b|c")]));
    assert_eq!(
        schedule("[b:2] trailing \\"),
        expect(&[(10, "[b:2] trailing \\")])
    );
}

#[test]
fn from_only_edits_and_exponent_numbers() {
    assert_eq!(
        schedule("a [b::4] c"),
        expect(&[(4, "a b c"), (10, "a  c")])
    );
    assert_eq!(schedule("x [a:1e1] y"), expect(&[(10, "x  y")]));
    assert_eq!(schedule("[a:b:0]"), expect(&[(10, "b")]));
    assert_eq!(schedule("[a:b:-3]"), expect(&[(10, "b")]));
}

#[test]
fn escapes_are_kept_for_the_attention_parser() {
    assert_eq!(
        schedule(r"\[a:b:2\] [c:3]"),
        expect(&[(3, r"\[a:b:2\] "), (10, r"\[a:b:2\] c")])
    );
}

#[test]
fn absurd_nesting_falls_back_to_the_literal_prompt() {
    let prompt = format!("{}x{}", "(".repeat(5000), ")".repeat(5000));
    assert_eq!(schedule(&prompt), expect(&[(10, &prompt)]));
    let prompt = "[".repeat(20000);
    assert_eq!(schedule(&prompt), expect(&[(10, &prompt)]));
}

#[test]
fn entries_are_looked_up_like_a1111_reconstruct_cond_batch() {
    let ends = [3, 7, 10];
    let picked: Vec<usize> = (0..=11).map(|step| entry_at_step(&ends, step)).collect();
    assert_eq!(picked, vec![0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
}

#[test]
fn two_schedules_align_on_the_union_of_their_switch_steps() {
    assert_eq!(
        align_schedules(&[3, 10], &[5, 10]),
        vec![(3, 0, 0), (5, 1, 0), (10, 1, 1)]
    );
    assert_eq!(align_schedules(&[10], &[10]), vec![(10, 0, 0)]);
}
