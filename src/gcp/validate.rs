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

/// A project id as GCE takes it in a resource path: a name, an optional
/// `domain:` prefix (`example.com:my-project`), or a project number.
fn is_valid_project_in_path(project: &str) -> bool {
    let name = match project.rsplit_once(':') {
        Some((domain, name)) => {
            let domain_ok = !domain.is_empty()
                && domain.split('.').all(|part| {
                    !part.is_empty()
                        && part.len() <= 63
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                });
            if !domain_ok {
                return false;
            }
            name
        }
        None => project,
    };
    let number = !name.is_empty() && name.len() <= 19 && name.bytes().all(|b| b.is_ascii_digit());
    let bytes = name.as_bytes();
    let named = matches!(bytes.first(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && matches!(bytes.last(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    number || named
}

/// The API roots GCE accepts in a full resource URL.
const COMPUTE_URL_ROOTS: &[&str] = &[
    "https://www.googleapis.com/compute/",
    "https://compute.googleapis.com/compute/",
];

/// A license as `images.insert` takes it: its full URL
/// (`https://www.googleapis.com/compute/v1/projects/<p>/global/licenses/<name>`)
/// or the partial `projects/<p>/global/licenses/<name>`.
fn is_valid_license(license: &str) -> bool {
    let path = COMPUTE_URL_ROOTS
        .iter()
        .find_map(|root| license.strip_prefix(root))
        .map(|rest| match rest.split_once('/') {
            Some(("v1" | "beta" | "alpha", path)) => Some(path),
            _ => None,
        })
        .unwrap_or(Some(license));
    let Some(path) = path else {
        return false;
    };
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["projects", project, "global", "licenses", name] => {
            is_valid_project_in_path(project) && is_valid_resource_name(name)
        }
        _ => false,
    }
}

const LICENSE_RULE: &str = "a license is its URL (https://www.googleapis.com/compute/v1/projects/PROJECT/global/licenses/NAME) or projects/PROJECT/global/licenses/NAME";

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
    for license in &request.licenses {
        if !is_valid_license(license) {
            problems.push(format!("license {license:?} is invalid: {LICENSE_RULE}"));
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
    fn licenses_are_urls_or_project_paths() {
        for ok in [
            "projects/debian-cloud/global/licenses/debian-12-bookworm",
            "https://www.googleapis.com/compute/v1/projects/vm-options/global/licenses/enable-vmx",
            "https://compute.googleapis.com/compute/beta/projects/p/global/licenses/l1",
            "projects/example.com:team-x/global/licenses/internal",
            "projects/123456789/global/licenses/l",
        ] {
            assert!(is_valid_license(ok), "{ok}");
        }
        for bad in [
            "",
            "enable-vmx",
            "global/licenses/enable-vmx",
            "projects/p/global/images/i",
            "projects/p/global/licenses/Bad_Name",
            "projects/P/global/licenses/l",
            "projects/p/global/licenses/l/extra",
            "https://www.googleapis.com/compute/v9/projects/p/global/licenses/l",
            "https://example.com/compute/v1/projects/p/global/licenses/l",
            "http://www.googleapis.com/compute/v1/projects/p/global/licenses/l",
        ] {
            assert!(!is_valid_license(bad), "{bad}");
        }
    }

    #[test]
    fn a_bad_license_is_reported_with_the_rule() {
        let mut req = request();
        req.licenses = vec!["projects/p/global/licenses/ok".into(), "enable-vmx".into()];
        let err = validate_image_request(&req).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(err.problems[0].contains("\"enable-vmx\""), "{err}");
        assert!(
            err.problems[0].contains("projects/PROJECT/global/licenses/NAME"),
            "{err}"
        );
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
