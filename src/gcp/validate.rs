//! Compute Engine's naming rules, checked before anything is uploaded so a
//! bad name costs nothing.

use std::fmt;

use super::compute::ImageRequest;

const MAX_LABELS: usize = 64;

/// Every rule the request breaks, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// One sentence per broken rule.
    pub problems: Vec<String>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid image request: {}", self.problems.join("; "))
    }
}

/// `^[a-z]([-a-z0-9]*[a-z0-9])?$`, at most 63 characters: the rule for
/// image names and families.
fn is_valid_resource_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    bytes.len() <= 63
        && first.is_ascii_lowercase()
        && (last.is_ascii_lowercase() || last.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
}

/// `^[a-z][a-z0-9_-]{0,62}$`
fn is_valid_label_key(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_lowercase())
        && key.len() <= 63
        && key.chars().all(is_label_char)
}

/// `^[a-z0-9_-]{0,63}$`
fn is_valid_label_value(value: &str) -> bool {
    value.len() <= 63 && value.chars().all(is_label_char)
}

const NAME_RULE: &str = "1-63 characters: lowercase letters, digits and dashes, starting with a letter and not ending with a dash";

/// Checks an image request against Compute Engine's rules.
pub fn validate_image_request(request: &ImageRequest) -> Result<(), ValidationError> {
    let mut problems = Vec::new();
    if request.project.trim().is_empty() {
        problems.push("project_id is empty".to_string());
    }
    if !is_valid_resource_name(&request.name) {
        problems.push(format!(
            "image name {:?} is invalid: {NAME_RULE}",
            request.name
        ));
    }
    if let Some(family) = &request.family
        && !is_valid_resource_name(family)
    {
        problems.push(format!("image family {family:?} is invalid: {NAME_RULE}"));
    }
    if request.labels.len() > MAX_LABELS {
        problems.push(format!(
            "{} labels; at most {MAX_LABELS} are allowed",
            request.labels.len()
        ));
    }
    for (key, value) in &request.labels {
        if !is_valid_label_key(key) {
            problems.push(format!(
                "label key {key:?} is invalid: 1-63 characters of lowercase letters, digits, '_' and '-', starting with a letter"
            ));
        }
        if !is_valid_label_value(value) {
            problems.push(format!(
                "label {key:?} has invalid value {value:?}: at most 63 characters of lowercase letters, digits, '_' and '-'"
            ));
        }
    }
    if request.bucket.trim().is_empty() || request.object.trim().is_empty() {
        problems.push("the source bucket and object must be named".to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ValidationError { problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn request() -> ImageRequest {
        ImageRequest::new(
            "proj",
            "ubuntu-2404-base-20260101",
            "bucket",
            "images/x.tar.gz",
        )
    }

    #[test]
    fn names() {
        for ok in ["a", "ubuntu-2404", "a1", &"a".repeat(63)] {
            assert!(is_valid_resource_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "Abc",
            "abc-",
            "a_b",
            "a.b",
            &"a".repeat(64),
            "ü",
        ] {
            assert!(!is_valid_resource_name(bad), "{bad}");
        }
    }

    #[test]
    fn labels() {
        assert!(is_valid_label_key("env"));
        assert!(is_valid_label_key("a_b-c9"));
        assert!(!is_valid_label_key(""));
        assert!(!is_valid_label_key("9a"));
        assert!(!is_valid_label_key("Env"));
        assert!(!is_valid_label_key(&"a".repeat(64)));
        assert!(is_valid_label_value(""));
        assert!(is_valid_label_value("2026-01-01_x"));
        assert!(!is_valid_label_value("Prod"));
        assert!(!is_valid_label_value(&"a".repeat(64)));
    }

    #[test]
    fn a_good_request_passes() {
        let mut req = request();
        req.family = Some("ubuntu-2404".into());
        req.labels = BTreeMap::from([("built-by".into(), "kiln".into())]);
        assert_eq!(validate_image_request(&req), Ok(()));
    }

    #[test]
    fn every_problem_is_reported() {
        let mut req = request();
        req.name = "Bad_Name".into();
        req.family = Some("fam-".into());
        req.labels = BTreeMap::from([("Key".into(), "ok".into()), ("k".into(), "UPPER".into())]);
        let err = validate_image_request(&req).unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
        let text = err.to_string();
        assert!(text.contains("\"Bad_Name\""), "{text}");
        assert!(text.contains("\"fam-\""), "{text}");
        assert!(text.contains("\"Key\""), "{text}");
        assert!(text.contains("\"UPPER\""), "{text}");
    }

    #[test]
    fn too_many_labels() {
        let mut req = request();
        req.labels = (0..65)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        let err = validate_image_request(&req).unwrap_err();
        assert!(err.to_string().contains("65 labels"), "{err}");
    }
}
