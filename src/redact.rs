//! Keeps the values of `sensitive-variables` out of every output.
//!
//! A secret is masked wherever its bytes appear, whole, inside any text:
//! in a derived value (`https://user:<secret>@host`), in an error message,
//! in a log line. Besides the value itself, the masker knows the forms it
//! takes on the way out: Rust's `Debug` escaping (a `?argv` in a log turns
//! `"` into `\"`), JSON, single-quoted shell text (`'` becomes `'\''`), and, for a
//! value of several lines, each line alone (guest output, the live UI and
//! a summary's first line split text into lines).

use std::fmt;
use std::sync::Arc;

/// What replaces a secret.
pub const MASK: &str = "<sensitive>";

/// A line of a multi-line secret is masked on its own when it has at least
/// this many characters (surrounding blanks aside): shorter lines (`}` of a
/// JSON key, say) are too common in ordinary output to mask everywhere,
/// and carry little of the secret.
const MIN_LINE: usize = 4;

/// Replaces each secret value, in every known form, with `<sensitive>`.
#[derive(Clone, Default)]
pub struct Redactor {
    // Longest first, so a secret that contains another is replaced whole.
    patterns: Arc<Vec<String>>,
    /// The values as given, to merge redactors.
    values: Arc<Vec<String>>,
}

/// The secrets themselves must not show through `{:?}`.
impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.values.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for `values` (empty ones are ignored), in every form
    /// they take in kiln's output.
    pub fn new(values: &[String]) -> Self {
        let mut kept: Vec<String> = Vec::new();
        for value in values {
            if !value.is_empty() && !kept.contains(value) {
                kept.push(value.clone());
            }
        }
        let mut patterns = Vec::new();
        for value in &kept {
            add_forms(&mut patterns, value);
            if value.contains('\n') {
                for line in value.lines().map(str::trim) {
                    if line.chars().count() >= MIN_LINE {
                        add_forms(&mut patterns, line);
                    }
                }
            }
        }
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        patterns.dedup();
        Redactor {
            patterns: Arc::new(patterns),
            values: Arc::new(kept),
        }
    }

    /// This redactor and `values` together.
    pub fn with(&self, values: &[String]) -> Self {
        let mut all: Vec<String> = self.values.to_vec();
        all.extend(values.iter().cloned());
        Redactor::new(&all)
    }

    /// `text` with every secret replaced. Every occurrence of every form
    /// is found in the original text first, overlapping ones included, and
    /// each run of covered text becomes one mask: nothing of two secrets
    /// that overlap is left, and a mask is never matched again.
    pub fn redact(&self, text: &str) -> String {
        let mut covered: Vec<(usize, usize)> = Vec::new();
        for pattern in self.patterns.iter() {
            let mut from = 0;
            while let Some(found) = text[from..].find(pattern.as_str()) {
                let start = from + found;
                covered.push((start, start + pattern.len()));
                // The next match may overlap this one.
                from = start + text[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
        if covered.is_empty() {
            return text.to_string();
        }
        covered.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut runs = covered.into_iter().peekable();
        while let Some((start, mut end)) = runs.next() {
            while let Some(&(next_start, next_end)) = runs.peek() {
                if next_start > end {
                    break;
                }
                end = end.max(next_end);
                runs.next();
            }
            out.push_str(&text[at..start]);
            out.push_str(MASK);
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }
}

/// The value and the escaped forms it takes in logs and commands.
fn add_forms(patterns: &mut Vec<String>, value: &str) {
    patterns.push(value.to_string());
    // `{:?}` of a string holding the value escapes `"`, `\`, control
    // characters and the like; inside a longer string the escaping of the
    // value's own characters is the same (but for a leading combining
    // mark, which only the start of a string escapes: both are kept).
    let debug = format!("{value:?}");
    let debug = &debug[1..debug.len() - 1];
    patterns.push(debug.to_string());
    patterns.push(value.escape_debug().to_string());
    // Debug of Debug: an error holding a `{:?}` printed with `{:?}` again.
    let twice = format!("{debug:?}");
    patterns.push(twice[1..twice.len() - 1].to_string());
    // In JSON (a QMP message, a report): like Debug but for control
    // characters (`\u0001`) and non-ASCII text, which JSON leaves as is.
    if let Ok(json) = serde_json::to_string(value) {
        patterns.push(json[1..json.len() - 1].to_string());
    }
    // Single-quoted for a shell, as environment_vars are.
    patterns.push(value.replace('\'', r"'\''"));
    patterns.retain(|p| !p.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_occurrence() {
        let r = Redactor::new(&["hunter2".into()]);
        assert_eq!(
            r.redact("a hunter2 b hunter2"),
            "a <sensitive> b <sensitive>"
        );
    }

    #[test]
    fn longest_secret_first() {
        let r = Redactor::new(&["abc".into(), "abcdef".into()]);
        assert_eq!(r.redact("xabcdefx abc"), "x<sensitive>x <sensitive>");
    }

    #[test]
    fn overlapping_secrets_leave_nothing_and_masks_are_not_matched_again() {
        let r = Redactor::new(&["abcd".into(), "cdef".into(), "sensitive".into()]);
        let out = r.redact("abcdef sensitive");
        assert!(!out.contains("ab") && !out.contains("ef"), "{out}");
        assert_eq!(r.redact("sensitive"), "<sensitive>");
    }

    #[test]
    fn empty_values_are_ignored() {
        let r = Redactor::new(&[String::new()]);
        assert_eq!(r.redact("plain"), "plain");
        assert!(r.patterns.is_empty());
    }

    #[test]
    fn a_derived_value_is_masked_inside() {
        let r = Redactor::new(&["p@ss".into()]);
        assert_eq!(
            r.redact("url = https://user:p@ss@example.com/x"),
            "url = https://user:<sensitive>@example.com/x"
        );
    }

    #[test]
    fn a_multi_line_secret_is_masked_whole_and_line_by_line() {
        let key = "-----BEGIN KEY-----\nAAAAB3NzaC1yc2E\nZw==\n-----END KEY-----";
        let r = Redactor::new(&[key.into()]);
        assert_eq!(r.redact(&format!("key: {key}.")), "key: <sensitive>.");
        // Split into lines (a guest echoing it, a summary's first line):
        // no line shows any line of the secret.
        for line in format!("before {key} after").lines() {
            let out = r.redact(line);
            for part in key.lines() {
                assert!(!out.contains(part), "{part:?} leaked in {out:?}");
            }
        }
        // With CRLF line ends, as a PTY prints them.
        let crlf = key.replace('\n', "\r\n");
        for line in crlf.split('\n') {
            assert_eq!(r.redact(line).trim_end(), "<sensitive>");
        }
    }

    #[test]
    fn short_lines_of_a_multi_line_secret_are_not_masked_alone() {
        let r = Redactor::new(&["{\nlong-enough\n}".into()]);
        assert_eq!(r.redact("{ x }"), "{ x }");
        assert_eq!(r.redact("long-enough"), "<sensitive>");
    }

    #[test]
    fn debug_escaped_forms_are_masked() {
        let secret = "pa\"ss\\wo\trd\n2";
        let r = Redactor::new(&[secret.into()]);
        let argv = vec![
            "-name".to_string(),
            format!("guest,password={secret}"),
            secret.to_string(),
        ];
        let logged = format!("launching QEMU argv={argv:?}");
        let out = r.redact(&logged);
        assert!(!out.contains("pa\\\"ss"), "{out}");
        assert_eq!(out.matches(MASK).count(), 2, "{out}");
        // An error holding a Debug rendering, rendered with Debug again.
        let twice = format!("{:?}", format!("{secret:?}"));
        assert!(!r.redact(&twice).contains("wo\\"), "{}", r.redact(&twice));
    }

    #[test]
    fn json_escaped_form_is_masked() {
        let secret = "ctl\u{1}-\u{e9}t\u{e9}\n\"x\"";
        let r = Redactor::new(&[secret.into()]);
        let json = serde_json::json!({"data": format!("[{secret}]")}).to_string();
        assert_eq!(r.redact(&json), r#"{"data":"[<sensitive>]"}"#);
    }

    #[test]
    fn shell_quoted_form_is_masked() {
        let r = Redactor::new(&["it's".into()]);
        assert_eq!(
            r.redact(r"TOKEN='it'\''s' ./run"),
            "TOKEN='<sensitive>' ./run"
        );
    }

    #[test]
    fn debug_does_not_show_the_secrets() {
        let r = Redactor::new(&["hunter2".into()]);
        let shown = format!("{r:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
