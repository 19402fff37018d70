//! kiln's `tests` section: smoke-test checks, in a template or in the file
//! given to `kiln test`.
//!
//! Each check has a `name` and exactly one of `inline`, `script`,
//! `command`, `file`, `service`, `port`, `package`; plus `expect_exit`,
//! `expect_stdout`, `expect_stderr` (regular expressions), `timeout`,
//! `retry_for`, and in a template `only`/`except`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value as Json};

use super::decode::{Cx, Obj, json_type};
use super::paths;
use crate::plan::{CheckKind, CheckSpec, PortProtocol};

const KINDS: &[&str] = &[
    "inline", "script", "command", "file", "service", "port", "package",
];

/// One decoded check with the raw object it came from (for `only`/`except`).
pub struct CheckHead<'a> {
    /// The decoded check.
    pub spec: CheckSpec,
    /// Its object, for `only`/`except`.
    pub map: &'a Map<String, Json>,
}

/// Decodes the `tests` array; `filters` says whether `only`/`except` are
/// allowed (in a template) or not (in a `kiln test` file).
pub fn decode_all<'a>(
    cx: &Cx,
    path: &str,
    section: &'a Json,
    cwd: &Path,
    filters: bool,
) -> Vec<CheckHead<'a>> {
    let Json::Array(items) = section else {
        cx.problem(
            path,
            format!("expected an array of checks, got {}", json_type(section)),
        );
        return Vec::new();
    };
    let mut names = BTreeSet::new();
    let mut heads = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        let Json::Object(map) = item else {
            cx.problem(
                &item_path,
                format!("expected a check object, got {}", json_type(item)),
            );
            continue;
        };
        let mut o = Obj::new(cx, item_path.clone(), map);
        if filters {
            o.allow(&["only", "except"]);
        }
        if let Some(spec) = decode_one(o, cwd) {
            if !names.insert(spec.name.clone()) {
                cx.problem(
                    format!("{item_path}.name"),
                    format!("another check is already named {:?}", spec.name),
                );
            }
            heads.push(CheckHead { spec, map });
        }
    }
    heads
}

fn decode_one(mut o: Obj<'_>, cwd: &Path) -> Option<CheckSpec> {
    let name = o.non_empty_string("name");
    if name.is_none() && !o.has("name") {
        o.missing("name", "each check needs a name for the report");
    }
    let unset = CheckSpec::default();
    let expect_exit = o.int("expect_exit", 0, 255).unwrap_or(unset.expect_exit);
    let expect_stdout = regex(&mut o, "expect_stdout");
    let expect_stderr = regex(&mut o, "expect_stderr");
    let timeout = o.duration("timeout").unwrap_or(unset.timeout);
    let retry_for = o.duration("retry_for").unwrap_or(unset.retry_for);

    let kind = match o.exactly_one(KINDS) {
        Some(which) => kind(&mut o, KINDS[which], cwd),
        None => None,
    };
    // Keys of the other kinds are still unknown here: mark the kind names
    // known so `finish` reports only real typos.
    o.allow(KINDS);
    o.finish();
    Some(CheckSpec {
        name: name?,
        kind: kind?,
        expect_exit,
        expect_stdout,
        expect_stderr,
        timeout,
        retry_for,
    })
}

fn regex(o: &mut Obj<'_>, key: &'static str) -> Option<String> {
    let text = o.string(key)?;
    match regex::Regex::new(&text) {
        Ok(_) => Some(text),
        Err(err) => {
            o.cx().problem(
                o.key_path(key),
                format!("not a valid regular expression: {err}"),
            );
            None
        }
    }
}

fn kind(o: &mut Obj<'_>, which: &str, cwd: &Path) -> Option<CheckKind> {
    match which {
        "inline" => {
            let lines = o.string_list("inline")?;
            if lines.is_empty() {
                o.cx()
                    .problem(o.key_path("inline"), "expected at least one command");
                return None;
            }
            Some(CheckKind::Inline(lines))
        }
        "script" => {
            let raw = o.non_empty_string("script")?;
            let path = paths::resolve(cwd, &raw);
            if !path.is_file() {
                o.cx().problem(
                    o.key_path("script"),
                    format!("file not found: {}", path.display()),
                );
                return None;
            }
            Some(CheckKind::Script(path))
        }
        "command" => Some(CheckKind::Command(o.non_empty_string("command")?)),
        "file" => {
            let path = o.non_empty_string("file")?;
            let exists = o.bool("exists").unwrap_or(true);
            let mode = o.string("mode").and_then(|m| octal_mode(o, &m));
            let owner = o.non_empty_string("owner");
            let group = o.non_empty_string("group");
            let contains = o.string("contains");
            if !exists
                && (mode.is_some() || owner.is_some() || group.is_some() || contains.is_some())
            {
                o.cx().problem(
                    o.path.clone(),
                    "a file that must not exist has no mode, owner, group or content to check",
                );
                return None;
            }
            Some(CheckKind::File {
                path,
                exists,
                mode,
                owner,
                group,
                contains,
            })
        }
        "service" => {
            let name = o.non_empty_string("service")?;
            let mut active = o.bool("active");
            let enabled = o.bool("enabled");
            if active.is_none() && enabled.is_none() {
                active = Some(true);
            }
            Some(CheckKind::Service {
                name,
                active,
                enabled,
            })
        }
        "port" => {
            let port = o.int("port", 1, 65535)?;
            let protocol = match o.choice("protocol", &["tcp", "udp"]).as_deref() {
                Some("udp") => PortProtocol::Udp,
                _ => PortProtocol::Tcp,
            };
            let listening = o.bool("listening").unwrap_or(true);
            Some(CheckKind::Port {
                port: u16::try_from(port).ok()?,
                protocol,
                listening,
            })
        }
        "package" => {
            let name = o.non_empty_string("package")?;
            let installed = o.bool("installed").unwrap_or(true);
            Some(CheckKind::Package { name, installed })
        }
        _ => None,
    }
}

/// `0644`, `644` or `4755` → what `stat -c %a` prints.
fn octal_mode(o: &Obj<'_>, text: &str) -> Option<String> {
    let digits = text.trim_start_matches("0o");
    let valid = !digits.is_empty()
        && digits.len() <= 5
        && digits.chars().all(|c| ('0'..='7').contains(&c))
        && u32::from_str_radix(digits, 8).is_ok_and(|m| m <= 0o7777);
    if !valid {
        o.cx().problem(
            o.key_path("mode"),
            format!("expected an octal file mode such as \"0644\", got {text:?}"),
        );
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0" } else { trimmed }.to_string())
}
