//! Keeps the values of `sensitive-variables` out of every output.

use std::sync::Arc;

/// Replaces each secret value with `<sensitive>`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    // Longest first, so a secret that contains another is replaced whole.
    secrets: Arc<Vec<String>>,
}

pub const MASK: &str = "<sensitive>";

impl Redactor {
    pub fn new(values: &[String]) -> Self {
        let mut secrets: Vec<String> = values.iter().filter(|v| !v.is_empty()).cloned().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor {
            secrets: Arc::new(secrets),
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in self.secrets.iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), MASK);
            }
        }
        text
    }
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
    fn empty_values_are_ignored() {
        let r = Redactor::new(&[String::new()]);
        assert_eq!(r.redact("plain"), "plain");
    }
}
