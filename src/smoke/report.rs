//! The test report: a table for people, JUnit XML and JSON for CI.

use std::path::{Path, PathBuf};

use super::run::CheckResult;

/// Lines of a failed check's output shown in the table.
const OUTPUT_LINES: usize = 5;

/// Why a test report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file could not be written.
    #[error("cannot write the test report {}", path.display())]
    Write {
        /// The report file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The report's name ends in neither `.xml` nor `.json`.
    #[error(
        "test report {}: the name must end in .xml (JUnit) or .json",
        .0.display()
    )]
    Format(PathBuf),
}

/// The summary table, one line per check, with the first lines of what a
/// failed check printed below it.
pub fn table(results: &[CheckResult]) -> Vec<String> {
    let width = results
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut lines = vec![format!(
        "{:<width$}  {:<6}  {:>7}  detail",
        "check", "result", "time"
    )];
    for r in results {
        let verdict = if r.passed { "pass" } else { "FAIL" };
        lines.push(format!(
            "{:<width$}  {:<6}  {:>7}  {}",
            r.name,
            verdict,
            crate::human::duration(r.duration),
            r.reason
        ));
        if !r.passed {
            for line in r
                .output
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(OUTPUT_LINES)
            {
                lines.push(format!("{:<width$}  | {line}", ""));
            }
        }
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    lines.push(format!(
        "{} check(s), {} passed, {failed} failed",
        results.len(),
        results.len() - failed
    ));
    lines
}

/// Writes `results` to `path`, as JUnit XML (`.xml`) or JSON (`.json`).
pub fn write(path: &Path, suite: &str, results: &[CheckResult]) -> Result<(), ReportError> {
    let text = match path.extension().and_then(|e| e.to_str()) {
        Some("xml") => junit(suite, results),
        Some("json") => json(suite, results),
        _ => return Err(ReportError::Format(path.to_path_buf())),
    };
    std::fs::write(path, text).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks the name before anything runs, so a typo does not cost a boot.
pub fn check_path(path: &Path) -> Result<(), ReportError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("xml" | "json") => Ok(()),
        _ => Err(ReportError::Format(path.to_path_buf())),
    }
}

/// The results as JUnit XML, one test suite named `suite`.
fn junit(suite: &str, results: &[CheckResult]) -> String {
    let failures = results.iter().filter(|r| !r.passed).count();
    let total: f64 = results.iter().map(|r| r.duration.as_secs_f64()).sum();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{total:.3}\">\n",
        escape(suite),
        results.len()
    ));
    for r in results {
        xml.push_str(&format!(
            "  <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            escape(&r.name),
            escape(suite),
            r.duration.as_secs_f64()
        ));
        if r.passed {
            xml.push_str("/>\n");
        } else {
            xml.push_str(&format!(
                ">\n    <failure message=\"{}\">{}</failure>\n  </testcase>\n",
                escape(&r.reason),
                escape(&r.output)
            ));
        }
    }
    xml.push_str("</testsuite>\n");
    xml
}

/// The results as JSON: the suite's name, counts and one object per check.
pub fn json(suite: &str, results: &[CheckResult]) -> String {
    let failures = results.iter().filter(|r| !r.passed).count();
    let checks: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "result": if r.passed { "pass" } else { "fail" },
                "seconds": (r.duration.as_secs_f64() * 1000.0).round() / 1000.0,
                "attempts": r.attempts,
                "reason": r.reason,
                "output": r.output,
            })
        })
        .collect();
    let report = serde_json::json!({
        "suite": suite,
        "tests": results.len(),
        "failures": failures,
        "checks": checks,
    });
    let mut text = serde_json::to_string_pretty(&report).unwrap_or_default();
    text.push('\n');
    text
}

/// The JSON report of checks that could not run: the test boot failed
/// (`why`), so every check counts as failed.
pub fn not_run(suite: &str, checks: usize, why: &str) -> String {
    let report = serde_json::json!({
        "suite": suite,
        "tests": checks,
        "failures": checks,
        "error": why,
        "checks": [],
    });
    let mut text = serde_json::to_string_pretty(&report).unwrap_or_default();
    text.push('\n');
    text
}

/// XML text and attribute escaping; characters XML 1.0 cannot hold at all
/// are dropped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn checks_that_could_not_run_all_count_as_failed_with_the_reason() {
        let report: serde_json::Value =
            serde_json::from_str(&not_run("web", 3, "ssh: timed out")).expect("json");
        assert_eq!(report["tests"], 3);
        assert_eq!(report["failures"], 3);
        assert_eq!(report["error"], "ssh: timed out");
        assert_eq!(report["suite"], "web");
    }

    fn results() -> Vec<CheckResult> {
        vec![
            CheckResult {
                name: "motd".into(),
                passed: true,
                duration: Duration::from_millis(120),
                attempts: 1,
                reason: String::new(),
                output: "hello\n".into(),
            },
            CheckResult {
                name: "nginx <up>".into(),
                passed: false,
                duration: Duration::from_millis(2500),
                attempts: 3,
                reason: "exit code 1, expected 0".into(),
                output: "line 1\n\x1bline & 2\n".into(),
            },
        ]
    }

    #[test]
    fn junit_counts_and_escapes() {
        let xml = junit("kiln", &results());
        assert!(
            xml.contains("<testsuite name=\"kiln\" tests=\"2\" failures=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains("<testcase name=\"motd\" classname=\"kiln\" time=\"0.120\"/>"),
            "{xml}"
        );
        assert!(xml.contains("name=\"nginx &lt;up&gt;\""), "{xml}");
        assert!(
            xml.contains(
                "<failure message=\"exit code 1, expected 0\">line 1\nline &amp; 2\n</failure>"
            ),
            "{xml}"
        );
        assert!(!xml.contains('\x1b'));
    }

    #[test]
    fn json_report_has_counts_and_results() {
        let value: serde_json::Value = serde_json::from_str(&json("kiln", &results())).unwrap();
        assert_eq!(value["tests"], 2);
        assert_eq!(value["failures"], 1);
        assert_eq!(value["checks"][1]["result"], "fail");
        assert_eq!(value["checks"][1]["attempts"], 3);
        assert_eq!(value["checks"][0]["seconds"], 0.12);
    }

    #[test]
    fn table_shows_failed_output() {
        let lines = table(&results());
        assert!(
            lines[1].contains("motd") && lines[1].contains("pass"),
            "{lines:?}"
        );
        assert!(
            lines[2].contains("FAIL") && lines[2].contains("exit code 1"),
            "{lines:?}"
        );
        assert!(lines[3].ends_with("| line 1"), "{lines:?}");
        assert_eq!(lines.last().unwrap(), "2 check(s), 1 passed, 1 failed");
    }

    #[test]
    fn report_format_comes_from_the_name() {
        assert!(check_path(Path::new("r.xml")).is_ok());
        assert!(check_path(Path::new("r.json")).is_ok());
        assert!(matches!(
            check_path(Path::new("r.txt")),
            Err(ReportError::Format(_))
        ));
    }
}
