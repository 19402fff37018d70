//! Input text as it appears in error messages: control characters escaped
//! so a template cannot drive the terminal (colours, titles, cursor moves,
//! a fake line), and very long text cut.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Escapes C0 and C1 control characters, DEL, and the Unicode line
/// separators and bidirectional overrides that reorder what a reader sees,
/// as `\u{1b}` (the form `{:?}` uses elsewhere in the messages).
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `escape`d and cut to about `max` bytes, saying how much was left out.
pub fn clip(s: &str, max: usize) -> String {
    let escaped = escape(s);
    if escaped.len() <= max {
        return escaped.into_owned();
    }
    let cut = escaped.floor_char_boundary(max);
    format!(
        "{}... ({} more bytes)",
        &escaped[..cut],
        escaped.len() - cut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain é"), "plain é");
        assert_eq!(escape("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(
            escape("x\ny\r\0\u{7f}\u{9b}"),
            "x\\u{a}y\\u{d}\\u{0}\\u{7f}\\u{9b}"
        );
        assert_eq!(escape("\u{202e}txt"), "\\u{202e}txt");
        assert!(matches!(escape("ok"), Cow::Borrowed(_)));
    }

    #[test]
    fn long_text_is_cut_on_a_character() {
        assert_eq!(clip("abc", 10), "abc");
        let cut = clip(&"é".repeat(10), 5);
        assert_eq!(cut, "éé... (16 more bytes)");
    }
}
