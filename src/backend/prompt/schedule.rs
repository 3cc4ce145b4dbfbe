//! Prompt editing `[from:to:when]`, `[to:when]`, `[from::when]` and alternation `[a|b|c]`, as
//! A1111's `get_learned_conditioning_prompt_schedules` expands them: a list of
//! `(end_at_step, prompt text)` where the text holds for every 0-based denoiser step
//! `s <= end_at_step` not claimed by an earlier entry.
//!
//! A1111 parses with a lark grammar; this is a recursive-descent reading of the same grammar:
//! outside any construct, stray `[`, `]`, `(`, `)` and `:` are plain text; inside one, brackets
//! must balance and `|` / `:` are only allowed where the construct expects them. A prompt the
//! grammar rejects (a `|` outside alternation brackets, a `\` at the very end) is used literally
//! for every step, as A1111 does.
//!
//! Where the grammar is ambiguous, a construct is always taken. (A1111's Earley parser resolves
//! those cases, e.g. `[a:b:3]]` at the top level, differently depending on Python's hash seed,
//! so A1111 itself gives either answer from one run to the next.) Checked against A1111's
//! grammar under lark 1.1.2 on 40,000 generated prompts: each of the 2,063 that differ from one
//! lark run gives exactly this module's answer under some other hash seed.

use std::collections::HashMap;

/// The prompt text that holds until (and including) 0-based denoiser step `end_at_step`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledPrompt {
    pub end_at_step: usize,
    pub text: String,
}

/// Constructs nested deeper than this make the whole prompt literal instead of growing the
/// stack without bound on request input.
const MAX_NESTING: usize = 100;

/// `steps` is the number of denoiser calls the schedule spans. An integer `when` is an absolute
/// step; one written with a `.` is a fraction of `steps`.
pub fn prompt_schedule(prompt: &str, steps: usize) -> Vec<ScheduledPrompt> {
    let Some(tree) = Parser::new(prompt).parse() else {
        return vec![ScheduledPrompt {
            end_at_step: steps,
            text: prompt.to_string(),
        }];
    };
    let steps = i64::try_from(steps).unwrap_or(i64::MAX);
    let mut ends = vec![steps];
    collect_switch_steps(&tree, steps, &mut ends);
    ends.sort_unstable();
    ends.dedup();
    ends.into_iter()
        .map(|end| {
            let mut text = String::new();
            render(&tree, end, steps, &mut text);
            ScheduledPrompt {
                end_at_step: usize::try_from(end).unwrap_or(0),
                text,
            }
        })
        .collect()
}

/// Index of the entry that holds at 0-based denoiser step `step`, given each entry's
/// `end_at_step` in ascending order: the first entry that has not ended (A1111's
/// `reconstruct_cond_batch`), or the last one past the end.
pub fn entry_at_step(ends: &[usize], step: usize) -> usize {
    ends.iter()
        .position(|end| step <= *end)
        .unwrap_or(ends.len().saturating_sub(1))
}

/// Two schedules over the same steps, cut into stretches where neither changes:
/// `(end_at_step, index in a, index in b)`, ascending.
pub fn align_schedules(a_ends: &[usize], b_ends: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut ends: Vec<usize> = a_ends.iter().chain(b_ends).copied().collect();
    ends.sort_unstable();
    ends.dedup();
    ends.into_iter()
        .map(|end| (end, entry_at_step(a_ends, end), entry_at_step(b_ends, end)))
        .collect()
}

#[derive(Debug, Clone)]
enum Node<'a> {
    /// Text copied as written (escapes included: the attention parser reads them later).
    Literal(&'a str),
    /// `[before:after:when]`; `before` is empty for `[after:when]`.
    Edit {
        before: Vec<Node<'a>>,
        after: Vec<Node<'a>>,
        when: &'a str,
    },
    /// `[a|b|…]`, empty options allowed.
    Alternate(Vec<Vec<Node<'a>>>),
}

/// The step at which `[…:when]` switches: A1111 truncates toward zero and caps at `steps`.
fn switch_step(when: &str, steps: i64) -> i64 {
    let value: f64 = when.parse().unwrap_or(0.0);
    let value = if when.contains('.') {
        value * steps as f64
    } else {
        value
    };
    // `as` saturates (and maps NaN to 0), where Python's int() would raise on infinity.
    (value.trunc() as i64).min(steps)
}

fn collect_switch_steps(nodes: &[Node<'_>], steps: i64, ends: &mut Vec<i64>) {
    for node in nodes {
        match node {
            Node::Literal(_) => {}
            Node::Edit {
                before,
                after,
                when,
            } => {
                let step = switch_step(when, steps);
                if step >= 1 {
                    ends.push(step);
                }
                collect_switch_steps(before, steps, ends);
                collect_switch_steps(after, steps, ends);
            }
            Node::Alternate(options) => {
                ends.extend(1..=steps);
                for option in options {
                    collect_switch_steps(option, steps, ends);
                }
            }
        }
    }
}

fn render(nodes: &[Node<'_>], step: i64, steps: i64, out: &mut String) {
    for node in nodes {
        match node {
            Node::Literal(text) => out.push_str(text),
            Node::Edit {
                before,
                after,
                when,
            } => {
                let branch = if step <= switch_step(when, steps) {
                    before
                } else {
                    after
                };
                render(branch, step, steps, out);
            }
            Node::Alternate(options) => {
                let count = options.len() as i64;
                // Python's modulo: step 0 (only with steps = 0) wraps to the last option.
                let index = (step - 1).rem_euclid(count.max(1));
                if let Some(option) = options.get(index as usize) {
                    render(option, step, steps, out);
                }
            }
        }
    }
}

type Parsed<'a> = Option<(Vec<Node<'a>>, usize)>;

struct Parser<'a> {
    text: &'a str,
    /// Result of the bracket construct starting at a byte offset: a construct that fails inside
    /// an enclosing one is retried from the top level, so remember instead of re-parsing.
    constructs: HashMap<usize, Parsed<'a>>,
    too_deep: bool,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            constructs: HashMap::new(),
            too_deep: false,
        }
    }

    fn char_at(&self, pos: usize) -> Option<char> {
        self.text.get(pos..).and_then(|rest| rest.chars().next())
    }

    /// The whole prompt; `None` where the grammar rejects it.
    fn parse(mut self) -> Option<Vec<Node<'a>>> {
        let mut nodes = Vec::new();
        let mut pos = 0;
        while let Some(c) = self.char_at(pos) {
            match c {
                '[' | '(' => match self.construct(pos, 0) {
                    Some((inner, end)) => {
                        nodes.extend(inner);
                        pos = end;
                    }
                    None => {
                        nodes.push(Node::Literal(&self.text[pos..pos + 1]));
                        pos += 1;
                    }
                },
                ']' | ')' | ':' => {
                    nodes.push(Node::Literal(&self.text[pos..pos + 1]));
                    pos += 1;
                }
                '|' => return None,
                _ => {
                    let end = self.plain_end(pos)?;
                    nodes.push(Node::Literal(&self.text[pos..end]));
                    pos = end;
                }
            }
            if self.too_deep {
                return None;
            }
        }
        Some(nodes)
    }

    /// End of the plain run at `pos`: anything but `\ [ ] ( ) : |`, plus `\` and the character
    /// after it. `None` for a `\` with nothing (or a newline) after it, which the grammar rejects.
    fn plain_end(&self, start: usize) -> Option<usize> {
        let mut pos = start;
        while let Some(c) = self.char_at(pos) {
            match c {
                '[' | ']' | '(' | ')' | ':' | '|' => break,
                '\\' => match self.char_at(pos + 1) {
                    Some(escaped) if escaped != '\n' => pos += 1 + escaped.len_utf8(),
                    _ => return None,
                },
                _ => pos += c.len_utf8(),
            }
        }
        Some(pos)
    }

    /// A sequence of plain text and balanced constructs, ending before `] ) : |` or the end.
    fn sequence(&mut self, start: usize, depth: usize) -> Parsed<'a> {
        let mut nodes = Vec::new();
        let mut pos = start;
        while let Some(c) = self.char_at(pos) {
            match c {
                ']' | ')' | ':' | '|' => break,
                '[' | '(' => {
                    let (inner, end) = self.construct(pos, depth + 1)?;
                    nodes.extend(inner);
                    pos = end;
                }
                _ => {
                    let end = self.plain_end(pos)?;
                    nodes.push(Node::Literal(&self.text[pos..end]));
                    pos = end;
                }
            }
        }
        Some((nodes, pos))
    }

    /// The construct opening at `start` (which holds `[` or `(`).
    fn construct(&mut self, start: usize, depth: usize) -> Parsed<'a> {
        if let Some(known) = self.constructs.get(&start) {
            return known.clone();
        }
        if depth > MAX_NESTING {
            self.too_deep = true;
            return None;
        }
        let parsed = if self.text[start..].starts_with('(') {
            self.emphasis(start, depth)
        } else {
            self.square(start, depth)
        };
        self.constructs.insert(start, parsed.clone());
        parsed
    }

    /// `(a)` or `(a:b)`: kept as written (the attention parser weighs it later).
    fn emphasis(&mut self, start: usize, depth: usize) -> Parsed<'a> {
        let (first, pos) = self.sequence(start + 1, depth)?;
        let mut nodes = vec![Node::Literal(&self.text[start..start + 1])];
        nodes.extend(first);
        match self.char_at(pos)? {
            ')' => {
                nodes.push(Node::Literal(&self.text[pos..pos + 1]));
                Some((nodes, pos + 1))
            }
            ':' => {
                nodes.push(Node::Literal(&self.text[pos..pos + 1]));
                let (second, end) = self.sequence(pos + 1, depth)?;
                nodes.extend(second);
                (self.char_at(end)? == ')').then_some(())?;
                nodes.push(Node::Literal(&self.text[end..end + 1]));
                Some((nodes, end + 1))
            }
            _ => None,
        }
    }

    /// `[a]` (kept as written), `[a|b…]`, `[to:when]` or `[from:to:when]`.
    fn square(&mut self, start: usize, depth: usize) -> Parsed<'a> {
        let (first, pos) = self.sequence(start + 1, depth)?;
        match self.char_at(pos)? {
            ']' => {
                let mut nodes = vec![Node::Literal(&self.text[start..start + 1])];
                nodes.extend(first);
                nodes.push(Node::Literal(&self.text[pos..pos + 1]));
                Some((nodes, pos + 1))
            }
            '|' => {
                let mut options = vec![first];
                let mut pos = pos;
                while self.char_at(pos) == Some('|') {
                    let (option, end) = self.sequence(pos + 1, depth)?;
                    options.push(option);
                    pos = end;
                }
                (self.char_at(pos)? == ']').then_some(())?;
                Some((vec![Node::Alternate(options)], pos + 1))
            }
            ':' => {
                if let Some((when, end)) = self.when_and_close(pos + 1) {
                    let edit = Node::Edit {
                        before: Vec::new(),
                        after: first,
                        when,
                    };
                    return Some((vec![edit], end));
                }
                let (second, after_second) = self.sequence(pos + 1, depth)?;
                (self.char_at(after_second)? == ':').then_some(())?;
                let (when, end) = self.when_and_close(after_second + 1)?;
                Some((
                    vec![Node::Edit {
                        before: first,
                        after: second,
                        when,
                    }],
                    end,
                ))
            }
            _ => None,
        }
    }

    /// `[whitespace] NUMBER [whitespace] ]` at `start`: the number's text and the offset after `]`.
    fn when_and_close(&self, start: usize) -> Option<(&'a str, usize)> {
        let number_start = self.skip_whitespace(start);
        let number_end = signed_number_end(self.text, number_start)?;
        let close = self.skip_whitespace(number_end);
        (self.char_at(close)? == ']').then_some((&self.text[number_start..number_end], close + 1))
    }

    fn skip_whitespace(&self, start: usize) -> usize {
        let rest = &self.text[start..];
        start + (rest.len() - rest.trim_start().len())
    }
}

/// End of lark's `SIGNED_NUMBER` at `start`: `[+-]` then `INT`, `INT.`, `INT.INT` or `.INT`,
/// then an optional exponent `e[+-]INT`.
fn signed_number_end(text: &str, start: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let digits_from = |pos: usize| {
        let count = bytes.get(pos..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        });
        pos + count
    };
    let mut pos = start;
    if matches!(bytes.get(pos), Some(b'+' | b'-')) {
        pos += 1;
    }
    let int_end = digits_from(pos);
    let mut end = int_end;
    if bytes.get(int_end) == Some(&b'.') {
        let fraction_end = digits_from(int_end + 1);
        if int_end > pos || fraction_end > int_end + 1 {
            end = fraction_end;
        }
    }
    if end == pos {
        return None;
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut exponent = end + 1;
        if matches!(bytes.get(exponent), Some(b'+' | b'-')) {
            exponent += 1;
        }
        let exponent_end = digits_from(exponent);
        if exponent_end > exponent {
            end = exponent_end;
        }
    }
    Some(end)
}

#[cfg(test)]
mod tests;
