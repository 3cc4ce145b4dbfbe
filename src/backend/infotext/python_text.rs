//! The Python text behaviour the A1111 infotext depends on, reproduced exactly: `repr(float)`,
//! `json.dumps(str, ensure_ascii=False)` and `str.strip()`.

/// Python's `repr(x)` for a float: the shortest digits that round-trip, in positional form when
/// the decimal exponent is in -4..16 (with `.0` added to whole numbers), else `d.ddde+XX`.
/// `7.0`, `0.75`, `1e-05`, `1e+16`, `123456789.0`, `0.30000000000000004`, `inf`, `nan`.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // `{:e}` gives the shortest round-trip digit count, but on an exact decimal tie between two
    // shortest candidates it may pick the upper one, where Python picks the even one (repr of
    // -625790626407467.25 is ...467.2). Re-rounding to that many digits with `{:.N$e}` (correctly
    // rounded, ties to even) gives Python's digits.
    let shortest = format!("{x:e}");
    let digit_count = shortest
        .split('e')
        .next()
        .map_or(1, |m| m.chars().filter(char::is_ascii_digit).count());
    let scientific = format!("{x:.prec$e}", prec = digit_count.saturating_sub(1));
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((scientific.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let sign = if mantissa.starts_with('-') { "-" } else { "" };
    let all_digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let trimmed = all_digits.trim_end_matches('0');
    let digits = if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    };

    if !(-4..16).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{fraction}e{exp_sign}{:02}", exponent.unsigned_abs());
    }
    if exponent < 0 {
        let zeros = "0".repeat((-exponent - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let int_len = exponent as usize + 1;
    if digits.len() <= int_len {
        let zeros = "0".repeat(int_len - digits.len());
        format!("{sign}{digits}{zeros}.0")
    } else {
        let (int_part, fraction) = digits.split_at(int_len);
        format!("{sign}{int_part}.{fraction}")
    }
}

/// `json.dumps(text, ensure_ascii=False)`: a double-quoted string escaping only `"`, `\` and
/// control characters below U+0020 (short forms where JSON has them, else lowercase `\u00XX`).
pub fn json_dumps_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Python's `str.isspace()` for one character: Unicode White_Space plus the ASCII separators
/// U+001C..U+001F, which Python counts and Rust's `char::is_whitespace` does not.
fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
pub fn python_strip(text: &str) -> &str {
    text.trim_matches(is_python_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        let cases: &[(f64, &str)] = &[
            (7.0, "7.0"),
            (7.5, "7.5"),
            (0.1, "0.1"),
            (0.75, "0.75"),
            (2.0, "2.0"),
            (1e-05, "1e-05"),
            (1.5e-07, "1.5e-07"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e22, "1e+22"),
            (1e100, "1e+100"),
            (9999999999999998.0, "9999999999999998.0"),
            (123456789.0, "123456789.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.30000000000000004, "0.30000000000000004"),
            // Exactly ...467.25: a tie between the two 16-digit candidates.
            (-(625790626407467.0 + 0.25), "-625790626407467.2"),
            (2.5e-5, "2.5e-05"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (-2.5, "-2.5"),
            (100.0, "100.0"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ];
        for &(value, expected) in cases {
            assert_eq!(python_float_repr(value), expected, "repr({value:?})");
        }
    }

    #[test]
    fn json_dumps_matches_python_without_ascii_escaping() {
        assert_eq!(json_dumps_str("a, b"), r#""a, b""#);
        assert_eq!(json_dumps_str("say \"hi\"\\n"), r#""say \"hi\"\\n""#);
        assert_eq!(json_dumps_str("line1\nline2\ttab\r"), r#""line1\nline2\ttab\r""#);
        assert_eq!(
            json_dumps_str("\u{1}\u{8}\u{c}\u{1f}\u{7f}"),
            "\"\\u0001\\b\\f\\u001f\u{7f}\""
        );
        assert_eq!(json_dumps_str("猫: 🐱"), "\"猫: 🐱\"");
    }

    #[test]
    fn strip_matches_python_whitespace() {
        assert_eq!(python_strip(" \t\n x y \u{3000}\u{1c}"), "x y");
        assert_eq!(python_strip("\u{200b}x"), "\u{200b}x"); // zero-width space is not whitespace
    }
}
