//! Packer's legacy JSON template: parsing, variables, `{{ }}` functions,
//! strict validation, and the typed [`Plan`] the build runs from.

pub mod model;

pub use model::*;

use std::path::{Path, PathBuf};

/// `-var` and `-var-file` from the command line, in the order given.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub vars: Vec<(String, String)>,
    pub var_files: Vec<PathBuf>,
}

/// One thing wrong with a template, at a JSON path such as
/// `builders[0].disk_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid JSON at line {line}, column {column}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        #[source]
        source: serde_json::Error,
    },
    /// Every problem found, all at once.
    #[error("{} has {} error(s):\n{}", path.display(), problems.len(), format_problems(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  * {}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads, interpolates and validates a template.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Plan, TemplateError> {
    let _ = (path, overrides);
    todo!("template::load")
}

/// Fills the late references (`{{ .Vars }}`, `{{ .Path }}`, `{{.SSHHostPort}}`,
/// ...) that [`load`] left in a string. Unknown late references are left as
/// they are.
pub fn render_late(text: &str, values: &[(&str, &str)]) -> String {
    let _ = values;
    text.to_string()
}
