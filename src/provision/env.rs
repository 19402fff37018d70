//! The `{{ .Vars }}` string Packer builds from a provisioner's environment.

use crate::ssh::shell_quote;

/// `K='v' ` for each variable, sorted by name as Packer sorts them, with
/// single quotes in values escaped for a POSIX shell. Later entries with the
/// same name win.
pub fn flatten_env(vars: &[(String, String)]) -> String {
    let mut merged: std::collections::BTreeMap<&str, &str> = Default::default();
    for (key, value) in vars {
        merged.insert(key, value);
    }
    merged
        .iter()
        .map(|(key, value)| format!("{key}={} ", shell_quote(value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sorted_and_quoted() {
        let vars = pairs(&[("B", "two words"), ("A", "it's")]);
        assert_eq!(flatten_env(&vars), r#"A='it'"'"'s' B='two words' "#);
    }

    #[test]
    fn later_value_wins() {
        let vars = pairs(&[("A", "1"), ("A", "2")]);
        assert_eq!(flatten_env(&vars), "A='2' ");
    }

    #[test]
    fn empty_is_empty() {
        assert_eq!(flatten_env(&[]), "");
    }
}
