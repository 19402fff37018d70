//! Strict, weakly typed decoding of JSON objects into options, collecting
//! every problem instead of stopping at the first.
//!
//! Packer decodes with mapstructure's `WeaklyTypedInput`, and interpolation
//! happens before decoding, so `"memory": "{{user `mem`}}"` must decode as a
//! number and `"headless": "true"` as a bool.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{Map, Value as Json};

use super::Problem;
use super::duration;
use crate::plan::render::engine as interpolate;
use crate::plan::render::funcs::FuncCtx;

/// Past this many problems, unknown keys get no suggestion: only the first
/// ones are shown (see `format_problems`), and a generated template can have
/// thousands.
const SUGGEST_UNDER: usize = 100;

/// The problems found so far, and the function context strings render with.
pub struct Cx {
    /// The context `{{ }}` functions see while strings are rendered.
    pub funcs: FuncCtx,
    problems: RefCell<Problems>,
    /// Lines worth telling about a template that loads.
    warnings: RefCell<Vec<String>>,
}

#[derive(Default)]
struct Problems {
    list: Vec<Problem>,
    /// Per-build decoding can find the same problem once per build.
    seen: HashSet<Problem>,
}

impl Cx {
    /// A context with no problems yet.
    pub fn new(funcs: FuncCtx) -> Cx {
        Cx {
            funcs,
            problems: RefCell::new(Problems::default()),
            warnings: RefCell::new(Vec::new()),
        }
    }

    /// Records a warning, once.
    pub fn warn(&self, line: impl Into<String>) {
        let line = line.into();
        let mut warnings = self.warnings.borrow_mut();
        if !warnings.contains(&line) {
            warnings.push(line);
        }
    }

    /// The warnings recorded, in order; the list is left empty.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.borrow_mut())
    }

    /// Records a problem at `path`, once: per-build decoding can meet it
    /// again.
    pub fn problem(&self, path: impl Into<String>, message: impl Into<String>) {
        let mut p = Problem {
            path: path.into(),
            message: message.into(),
        };
        // Only a gap in the callers could leave it empty: still say where.
        if p.path.is_empty() {
            p.path = "(template)".into();
        }
        let mut probs = self.problems.borrow_mut();
        if !probs.seen.contains(&p) {
            probs.list.push(p.clone());
            probs.seen.insert(p);
        }
    }

    /// The problems recorded, in order; the list is left empty.
    pub fn take_problems(&self) -> Vec<Problem> {
        std::mem::take(&mut *self.problems.borrow_mut()).list
    }

    /// Whether any problem is recorded.
    pub fn has_problems(&self) -> bool {
        !self.problems.borrow().list.is_empty()
    }

    /// Whether a suggestion is still worth computing.
    pub fn listing(&self) -> bool {
        self.problems.borrow().list.len() < SUGGEST_UNDER
    }

    /// Renders the `{{ }}` in a string, reporting failures at `path`.
    pub fn render(&self, path: &str, text: &str) -> Option<String> {
        match interpolate::render(text, &self.funcs) {
            Ok(s) => Some(s),
            Err(interpolate::EvalError::AlreadyReported) => None,
            Err(e) => {
                self.problem(path, e.to_string());
                None
            }
        }
    }
}

/// A key as a step of a problem's path: an empty key (valid JSON) shows as
/// `""` so every problem names a place.
pub fn key_name(key: &str) -> String {
    if key.is_empty() {
        "\"\"".to_string()
    } else {
        key.to_string()
    }
}

/// How a JSON value's type is named in messages (`a string`, `an array`).
pub fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a bool",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn show(v: &Json) -> String {
    match v {
        Json::String(s) => format!("{s:?}"),
        Json::Array(_) | Json::Object(_) => json_type(v).to_string(),
        other => other.to_string(),
    }
}

/// One JSON object being decoded: remembers the keys asked for so the rest
/// can be reported as unknown.
pub struct Obj<'a> {
    /// The object's place in the template (`builders[0]`); empty for the
    /// top level.
    pub path: String,
    map: &'a Map<String, Json>,
    asked: Vec<&'static str>,
    cx: &'a Cx,
}

impl<'a> Obj<'a> {
    /// The object `map` found at `path`.
    pub fn new(cx: &'a Cx, path: impl Into<String>, map: &'a Map<String, Json>) -> Obj<'a> {
        Obj {
            path: path.into(),
            map,
            asked: Vec::new(),
            cx,
        }
    }

    /// Exactly one of `keys` must be present; returns which.
    pub fn exactly_one(&self, keys: &[&str]) -> Option<usize> {
        let present: Vec<usize> = (0..keys.len()).filter(|i| self.has(keys[*i])).collect();
        match present.as_slice() {
            [one] => Some(*one),
            [] => {
                self.cx().problem(
                    self.path.clone(),
                    format!("one of {} is required", keys.join(", ")),
                );
                None
            }
            many => {
                let names: Vec<&str> = many.iter().map(|i| keys[*i]).collect();
                self.cx().problem(
                    self.path.clone(),
                    format!(
                        "only one of {} may be set, got {}",
                        keys.join(", "),
                        names.join(" and ")
                    ),
                );
                None
            }
        }
    }

    /// The path of `key` in this object, for messages.
    pub fn key_path(&self, key: &str) -> String {
        let key = key_name(key);
        if self.path.is_empty() {
            key
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The context problems are reported to.
    pub fn cx(&self) -> &'a Cx {
        self.cx
    }

    /// Marks keys as known without reading them.
    pub fn allow(&mut self, keys: &[&'static str]) {
        self.asked.extend_from_slice(keys);
    }

    /// The raw value, `null` counting as absent.
    pub fn raw(&mut self, key: &'static str) -> Option<&'a Json> {
        self.asked.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is set (to something other than `null`), without asking
    /// for it.
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// A string; numbers and bools are taken as their text, as Packer's
    /// weak decoding does.
    pub fn string(&mut self, key: &'static str) -> Option<String> {
        let v = self.raw(key)?;
        let path = self.key_path(key);
        string_value(self.cx, &path, v)
    }

    /// A string that must not be empty when given.
    pub fn non_empty_string(&mut self, key: &'static str) -> Option<String> {
        self.string(key).filter(|s| !s.is_empty())
    }

    /// A bool; strings such as `"true"` and `"0"` count, as in Packer.
    pub fn bool(&mut self, key: &'static str) -> Option<bool> {
        let v = self.raw(key)?;
        let path = self.key_path(key);
        bool_value(self.cx, &path, v)
    }

    /// An integer in `min..=max`; an empty string counts as absent, as
    /// mapstructure's weak decoding turns it into zero, Packer's "unset".
    pub fn int(&mut self, key: &'static str, min: i64, max: i64) -> Option<i64> {
        let v = self.raw(key)?;
        let path = self.key_path(key);
        int_value(self.cx, &path, v, min, max)
    }

    /// A Go duration such as `"5m"`; an empty string counts as absent.
    pub fn duration(&mut self, key: &'static str) -> Option<Duration> {
        let v = self.raw(key)?;
        let path = self.key_path(key);
        let s = string_value(self.cx, &path, v)?;
        if s.is_empty() {
            return None;
        }
        duration::parse(&s)
            .map_err(|e| self.cx.problem(&path, e))
            .ok()
    }

    /// An array of strings.
    pub fn string_list(&mut self, key: &'static str) -> Option<Vec<String>> {
        let v = self.raw(key)?;
        let path = self.key_path(key);
        string_list_value(self.cx, &path, v)
    }

    /// An object of strings.
    pub fn string_map(&mut self, key: &'static str) -> Option<BTreeMap<String, String>> {
        let v = self.raw(key)?;
        let path = self.key_path(key);
        let Json::Object(map) = v else {
            self.cx.problem(
                &path,
                format!("expected an object of strings, got {}", json_type(v)),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, item) in map {
            match string_value(self.cx, &format!("{path}.{}", key_name(k)), item) {
                Some(s) => {
                    out.insert(k.clone(), s);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// One of `choices`, as a string.
    pub fn choice(&mut self, key: &'static str, choices: &[&str]) -> Option<String> {
        let s = self.string(key)?;
        if s.is_empty() {
            return None;
        }
        if choices.contains(&s.as_str()) {
            Some(s)
        } else {
            let path = self.key_path(key);
            self.cx.problem(
                path,
                format!("expected one of {}, got {s:?}", choices.join(", ")),
            );
            None
        }
    }

    /// Reports that the required `key` is missing; `what` says what it
    /// should hold.
    pub fn missing(&self, key: &str, what: &str) {
        self.cx
            .problem(self.key_path(key), format!("is required: {what}"));
    }

    /// Reports every key that was never asked for.
    pub fn finish(self) {
        let asked: HashSet<&str> = self.asked.iter().copied().collect();
        for key in self.map.keys() {
            if asked.contains(key.as_str()) {
                continue;
            }
            let mut message = "unknown key".to_string();
            if self.cx.listing()
                && let Some(best) = closest(key, &self.asked)
            {
                message.push_str(&format!(" (did you mean {best}?)"));
            }
            self.cx.problem(self.key_path(key), message);
        }
    }
}

/// A value weakly decoded as a string, `{{ }}` rendered; a problem at
/// `path` if it is an array, object or null.
pub fn string_value(cx: &Cx, path: &str, v: &Json) -> Option<String> {
    match v {
        Json::String(s) => cx.render(path, s),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        other => {
            cx.problem(path, format!("expected a string, got {}", json_type(other)));
            None
        }
    }
}

fn bool_value(cx: &Cx, path: &str, v: &Json) -> Option<bool> {
    let bad = |shown: String| {
        cx.problem(
            path,
            format!(
                "expected a bool (true, false, \"true\", \"false\", \"1\" or \"0\"), got {shown}"
            ),
        );
        None
    };
    match v {
        Json::Bool(b) => Some(*b),
        Json::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => bad(n.to_string()),
        },
        Json::String(s) => {
            let s = cx.render(path, s)?;
            // strconv.ParseBool's spellings; "" is mapstructure's zero value.
            match s.as_str() {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
                "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Some(false),
                _ => bad(format!("{s:?}")),
            }
        }
        other => bad(show(other)),
    }
}

/// A value weakly decoded as an integer in `min..=max`; an empty string
/// is absent.
pub fn int_value(cx: &Cx, path: &str, v: &Json, min: i64, max: i64) -> Option<i64> {
    let n = match v {
        Json::Number(n) => match n.as_i64() {
            Some(i) => i,
            None => {
                cx.problem(path, format!("expected an integer, got {n}"));
                return None;
            }
        },
        Json::String(s) => {
            let s = cx.render(path, s)?;
            let t = s.trim();
            if t.is_empty() {
                return None;
            }
            match t.parse::<i64>() {
                Ok(i) => i,
                Err(_) => {
                    cx.problem(path, format!("expected an integer, got {s:?}"));
                    return None;
                }
            }
        }
        other => {
            cx.problem(path, format!("expected an integer, got {}", show(other)));
            return None;
        }
    };
    if n < min || n > max {
        cx.problem(
            path,
            format!("expected an integer from {min} to {max}, got {n}"),
        );
        return None;
    }
    Some(n)
}

/// A value that must be an array of strings; every bad entry is reported.
pub fn string_list_value(cx: &Cx, path: &str, v: &Json) -> Option<Vec<String>> {
    // Packer decodes options with mapstructure's weak typing, which turns
    // a single value into a one-item list: `"boot_command": "<enter>"`.
    if let Json::String(_) | Json::Number(_) | Json::Bool(_) = v {
        return string_value(cx, path, v).map(|s| vec![s]);
    }
    let Json::Array(items) = v else {
        cx.problem(
            path,
            format!("expected an array of strings, got {}", json_type(v)),
        );
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match string_value(cx, &format!("{path}[{i}]"), item) {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// The known key nearest to `key`, if it is plausibly a typo.
pub fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    // A typo is within a few edits, so the lengths differ by as much at
    // most: a long key is compared with nothing.
    let key: Vec<char> = key.chars().take(MAX_KEY_CHARS + 1).collect();
    if key.len() > MAX_KEY_CHARS {
        return None;
    }
    let mut row = Vec::with_capacity(MAX_KEY_CHARS + 1);
    known
        .iter()
        .filter_map(|k| {
            let limit = 2.max(k.len() / 4);
            if k.len().abs_diff(key.len()) > limit {
                return None;
            }
            let d = levenshtein(&key, k, &mut row);
            (d <= limit).then_some((d, *k))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Keys longer than this get no suggestion: every known key is shorter.
const MAX_KEY_CHARS: usize = 64;

/// The edit distance, in one reused row.
fn levenshtein(a: &[char], b: &str, row: &mut Vec<usize>) -> usize {
    row.clear();
    row.extend(0..=a.len());
    for (j, cb) in b.chars().enumerate() {
        // row[i] holds the distance of a[..i] to b[..j]; `diag` the one to
        // b[..j - 1] before it is overwritten.
        let mut diag = row[0];
        row[0] = j + 1;
        for (i, ca) in a.iter().enumerate() {
            let cost = usize::from(*ca != cb);
            let next = (diag + cost).min(row[i + 1] + 1).min(row[i] + 1);
            diag = row[i + 1];
            row[i + 1] = next;
        }
    }
    row[a.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            closest("disk_sise", &["disk_size", "format"]),
            Some("disk_size")
        );
        assert_eq!(closest("zzzzzz", &["disk_size", "format"]), None);
        assert_eq!(closest("fromat", &["disk_size", "format"]), Some("format"));
        assert_eq!(closest("memroy", &["memory"]), Some("memory"));
        assert_eq!(closest("", &["cpus"]), None);
        assert_eq!(closest("cpu", &["cpus"]), Some("cpus"));
        assert_eq!(closest(&"k".repeat(1 << 20), &["disk_size"]), None);
        let mut row = Vec::new();
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        assert_eq!(levenshtein(&chars("kitten"), "sitting", &mut row), 3);
        assert_eq!(levenshtein(&chars(""), "abc", &mut row), 3);
        assert_eq!(levenshtein(&chars("abc"), "", &mut row), 3);
    }
}
