//! The secrets this process knows, for every output: the UI, error
//! messages, the log. The masking itself is [`crate::redact`].

use std::sync::RwLock;

pub use crate::redact::{MASK, Redactor};

/// Every secret this process has learned, for the outputs that exist
/// before (or apart from) any one command's output: error messages and
/// the log.
static KNOWN: RwLock<Option<Redactor>> = RwLock::new(None);

/// Adds `values` to the process-wide secrets. Only ever grows: a secret
/// once known stays masked for the rest of the run.
pub fn remember(values: &[String]) {
    if values.is_empty() {
        return;
    }
    let mut known = match KNOWN.write() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let merged = match known.as_ref() {
        Some(redactor) => redactor.with(values),
        None => Redactor::new(values),
    };
    *known = Some(merged);
}

/// The process-wide secrets learned so far.
pub fn known() -> Redactor {
    let known = match KNOWN.read() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    known.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_wide_secrets_only_grow() {
        remember(&["first-process-secret".into()]);
        remember(&["second-process-secret".into()]);
        let out = known().redact("first-process-secret second-process-secret");
        assert_eq!(out, "<sensitive> <sensitive>");
    }
}
