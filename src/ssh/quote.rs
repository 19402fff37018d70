//! Quoting for the guest's POSIX shell, which runs every command kiln sends.

/// Single-quotes `value` for a POSIX shell.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r#"'"'"'"#))
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quotes_embedded_single_quotes() {
        assert_eq!(shell_quote("it's"), r#"'it'"'"'s'"#);
        assert_eq!(shell_quote(""), "''");
    }
}
