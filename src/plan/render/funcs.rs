//! Packer's template functions, evaluated at load time.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::engine::{EvalError, MAX_VALUE_BYTES, Resolver, Value, too_long};

/// The most text one template may render in all, function results and
/// final values together: with [`MAX_VALUE_BYTES`] per value this bounds a
/// template with many large values, or one value piped through many
/// functions, to a fraction of a second and a few MiB at a time.
pub const MAX_TOTAL_BYTES: usize = 64 << 20;

/// The most evaluation steps (loop turns, actions) one template may take
/// in all: each string has its own, smaller bound, and this one keeps many
/// strings with long loops from adding up.
pub const MAX_TOTAL_STEPS: usize = 4_000_000;

/// The functions a template may call at load time, by name.
pub const FUNCTIONS: &[&str] = &[
    "user",
    "env",
    "timestamp",
    "isotime",
    "uuid",
    "build_name",
    "build_type",
    "template_dir",
    "pwd",
    "split",
    "replace",
    "replace_all",
    "lower",
    "upper",
    "clean_resource_name",
    "packer_version",
    "consul_key",
    "vault",
    "aws_secretsmanager",
    "sed",
];

/// The Packer release whose templates kiln reads, as `packer_version`
/// prints it: templates compare it to pick options that differ by release.
pub const PACKER_VERSION: &str = "1.6.6";

/// Everything the functions can see while one string is rendered.
#[derive(Debug, Clone)]
pub struct FuncCtx {
    /// `env` is only allowed in the `variables` section, as in Packer.
    pub env_allowed: bool,
    /// The variables resolved so far, for `user`.
    pub vars: BTreeMap<String, String>,
    /// Variables whose problem is already reported (a required one not set,
    /// a default that failed): using them adds no further message.
    pub failed_vars: BTreeSet<String>,
    /// The build being decoded, for `build_name`.
    pub build_name: Option<String>,
    /// Its builder type, for `build_type`.
    pub build_type: Option<String>,
    /// The template's directory, for `template_dir`.
    pub template_dir: String,
    /// The working directory, for `pwd`.
    pub pwd: String,
    /// One instant per run, shared by `timestamp` and `isotime`.
    pub now: DateTime<Utc>,
    /// The text rendered so far, against [`MAX_TOTAL_BYTES`].
    pub budget: Budget,
}

/// What has been rendered so far, against [`MAX_TOTAL_BYTES`].
#[derive(Debug, Clone, Default)]
pub struct Budget {
    spent: Cell<usize>,
    steps: Cell<usize>,
    /// Over budget and said so once: every later string fails quietly
    /// rather than repeating the message for every field.
    reported: Cell<bool>,
}

fn msg(m: impl Into<String>) -> EvalError {
    EvalError::Message(m.into())
}

fn arity(name: &str, args: &[Value], n: usize) -> Result<(), EvalError> {
    if args.len() != n {
        return Err(msg(format!(
            "{name} takes {n} argument(s), got {}",
            args.len()
        )));
    }
    Ok(())
}

fn string_arg(name: &str, args: &[Value], i: usize) -> Result<String, EvalError> {
    match &args[i] {
        Value::Str(s) => Ok(s.clone()),
        other => Err(msg(format!(
            "argument {} of {name} must be a string, got {other}",
            i + 1
        ))),
    }
}

fn int_arg(name: &str, args: &[Value], i: usize) -> Result<i64, EvalError> {
    match &args[i] {
        Value::Int(n) => Ok(*n),
        other => Err(msg(format!(
            "argument {} of {name} must be an integer, got {other:?}",
            i + 1
        ))),
    }
}

impl Resolver for FuncCtx {
    fn is_function(&self, name: &str) -> bool {
        FUNCTIONS.contains(&name)
    }

    fn call(&self, name: &str, args: &[Value]) -> Result<Value, EvalError> {
        let value = self.call_unbounded(name, args)?;
        if let Value::Str(s) = &value {
            if s.len() > MAX_VALUE_BYTES {
                return Err(too_long());
            }
            self.charge(s.len())?;
        }
        Ok(value)
    }

    fn field(&self, _name: &str) -> Option<Value> {
        None
    }

    fn charge(&self, bytes: usize) -> Result<(), EvalError> {
        let spent = self.budget.spent.get().saturating_add(bytes);
        self.budget.spent.set(spent);
        if spent <= MAX_TOTAL_BYTES {
            Ok(())
        } else {
            Err(self.over_budget(format!(
                "the template renders more than {} of text in all (the limit for one template)",
                crate::human::exact_bytes(MAX_TOTAL_BYTES)
            )))
        }
    }

    fn charge_steps(&self, steps: usize) -> Result<(), EvalError> {
        let spent = self.budget.steps.get().saturating_add(steps);
        self.budget.steps.set(spent);
        if spent <= MAX_TOTAL_STEPS {
            Ok(())
        } else {
            Err(self.over_budget(format!(
                "the template takes more than {MAX_TOTAL_STEPS} steps to render in all \
                 (the limit for one template; loops that run too long?)"
            )))
        }
    }
}

impl FuncCtx {
    fn over_budget(&self, what: String) -> EvalError {
        if self.budget.reported.replace(true) {
            EvalError::AlreadyReported
        } else {
            msg(format!("{what}; later values are not checked"))
        }
    }

    /// The functions themselves; [`Resolver::call`] bounds what they return.
    /// The ones that can grow their input check the size before building it.
    fn call_unbounded(&self, name: &str, args: &[Value]) -> Result<Value, EvalError> {
        match name {
            "split" | "replace" | "replace_all" | "lower" | "upper" | "clean_resource_name" => {
                call_string_function(name, args)
            }
            _ => self.call_context_function(name, args),
        }
    }

    /// The functions that read the context: variables, the environment,
    /// the time, the build and the directories.
    fn call_context_function(&self, name: &str, args: &[Value]) -> Result<Value, EvalError> {
        let s = |v: String| Ok(Value::Str(v));
        match name {
            "user" => {
                arity(name, args, 1)?;
                let k = string_arg(name, args, 0)?;
                match self.vars.get(&k) {
                    Some(v) => s(v.clone()),
                    None if self.failed_vars.contains(&k) => Err(EvalError::AlreadyReported),
                    // Packer renders an unknown variable as "" everywhere
                    // but in the variables section, where it is an error.
                    None if !self.env_allowed => s(String::new()),
                    None => Err(EvalError::UnknownVariable(k)),
                }
            }
            "env" => {
                arity(name, args, 1)?;
                if !self.env_allowed {
                    return Err(msg(
                        "env is only allowed in the default values of the variables section",
                    ));
                }
                let k = string_arg(name, args, 0)?;
                s(std::env::var(&k).unwrap_or_default())
            }
            "timestamp" => {
                arity(name, args, 0)?;
                s(self.now.timestamp().to_string())
            }
            "isotime" => match args.len() {
                0 => s(self.now.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                1 => s(go_format(&self.now, &string_arg(name, args, 0)?)),
                n => Err(msg(format!("isotime takes at most 1 argument, got {n}"))),
            },
            "uuid" => {
                arity(name, args, 0)?;
                s(uuid::Uuid::new_v4().to_string())
            }
            "build_name" => {
                arity(name, args, 0)?;
                self.build_name
                    .clone()
                    .map(Value::Str)
                    .ok_or_else(|| msg("build_name is not available here"))
            }
            "build_type" => {
                arity(name, args, 0)?;
                self.build_type
                    .clone()
                    .map(Value::Str)
                    .ok_or_else(|| msg("build_type is not available here"))
            }
            "template_dir" => {
                arity(name, args, 0)?;
                s(self.template_dir.clone())
            }
            "pwd" => {
                arity(name, args, 0)?;
                s(self.pwd.clone())
            }
            "packer_version" => {
                arity(name, args, 0)?;
                s(PACKER_VERSION.to_string())
            }
            "consul_key" | "vault" | "aws_secretsmanager" => self.call_secret_store(name, args),
            "sed" => Err(msg(
                "template function `sed` is deprecated: use `replace` or `replace_all` instead",
            )),
            other => Err(msg(format!("function {other:?} is not defined"))),
        }
    }
}

impl FuncCtx {
    /// Packer reads these from a Consul, Vault or AWS Secrets Manager
    /// server while it loads the template; kiln builds offline and never
    /// contacts one, so the call says which value to pass instead.
    fn call_secret_store(&self, name: &str, args: &[Value]) -> Result<Value, EvalError> {
        let (store, wanted) = match name {
            "consul_key" => ("Consul", 1..=1),
            "vault" => ("Vault", 2..=2),
            _ => ("AWS Secrets Manager", 1..=2),
        };
        if !wanted.contains(&args.len()) {
            let want = if wanted.start() == wanted.end() {
                wanted.start().to_string()
            } else {
                format!("{} or {}", wanted.start(), wanted.end())
            };
            return Err(msg(format!(
                "{name} takes {want} argument(s), got {}",
                args.len()
            )));
        }
        if !self.env_allowed {
            // As in Packer: secrets are read into variables, never inline.
            return Err(msg(format!(
                "{name} is only allowed in the default values of the variables section"
            )));
        }
        let key = args
            .iter()
            .map(|a| format!("{:?}", a.to_string()))
            .collect::<Vec<_>>()
            .join(" ");
        Err(msg(format!(
            "{name} {key} is not available offline: kiln does not read {store} \
             (set the value with -var or -var-file instead)"
        )))
    }
}

/// The functions of their arguments alone.
fn call_string_function(name: &str, args: &[Value]) -> Result<Value, EvalError> {
    let s = |v: String| Ok(Value::Str(v));
    match name {
        "split" => {
            // Packer: split STRING SEPARATOR INDEX.
            arity(name, args, 3)?;
            let text = string_arg(name, args, 0)?;
            let sep = string_arg(name, args, 1)?;
            let i = int_arg(name, args, 2)?;
            usize::try_from(i)
                .ok()
                .and_then(|i| go_split_nth(&text, &sep, i))
                .map(Value::Str)
                .ok_or_else(|| {
                    msg(format!(
                        "the substring {i} was unavailable using the separator value, {sep}, only {} values were found",
                        go_split_count(&text, &sep)
                    ))
                })
        }
        "replace" => {
            // Packer: replace OLD NEW N SOURCE (source last, for pipelines).
            arity(name, args, 4)?;
            let old = string_arg(name, args, 0)?;
            let new = string_arg(name, args, 1)?;
            let n = int_arg(name, args, 2)?;
            let src = string_arg(name, args, 3)?;
            s(go_replace(&src, &old, &new, n)?)
        }
        "replace_all" => {
            arity(name, args, 3)?;
            let old = string_arg(name, args, 0)?;
            let new = string_arg(name, args, 1)?;
            let src = string_arg(name, args, 2)?;
            s(go_replace(&src, &old, &new, -1)?)
        }
        "lower" => {
            arity(name, args, 1)?;
            s(string_arg(name, args, 0)?.to_lowercase())
        }
        "upper" => {
            arity(name, args, 1)?;
            s(string_arg(name, args, 0)?.to_uppercase())
        }
        "clean_resource_name" => {
            arity(name, args, 1)?;
            s(clean_resource_name(&string_arg(name, args, 0)?))
        }
        other => Err(msg(format!("function {other:?} is not defined"))),
    }
}

/// Part `i` of Go's `strings.Split`, where an empty separator splits into
/// characters; the parts are not collected, as a long text has many.
fn go_split_nth(text: &str, sep: &str, i: usize) -> Option<String> {
    if sep.is_empty() {
        return text.chars().nth(i).map(String::from);
    }
    text.split(sep).nth(i).map(String::from)
}

fn go_split_count(text: &str, sep: &str) -> usize {
    if sep.is_empty() {
        return text.chars().count();
    }
    text.matches(sep).count() + 1
}

/// Go's `strings.Replace`: `n < 0` replaces all; an empty `old` matches
/// before every character and at the end. The result's size is worked out
/// first: nested replacements can double a value at every level.
fn go_replace(src: &str, old: &str, new: &str, n: i64) -> Result<String, EvalError> {
    if n == 0 {
        return Ok(src.to_string());
    }
    let limit = usize::try_from(n).unwrap_or(usize::MAX);
    let matches = if old.is_empty() {
        src.chars().count().saturating_add(1)
    } else {
        src.matches(old).count()
    }
    .min(limit);
    let size = (src.len() - matches * old.len()).saturating_add(matches.saturating_mul(new.len()));
    if size > MAX_VALUE_BYTES {
        return Err(too_long());
    }
    Ok(replace_counted(src, old, new, limit))
}

fn replace_counted(src: &str, old: &str, new: &str, limit: usize) -> String {
    if old.is_empty() {
        let mut out = String::new();
        let mut done = 0;
        for c in src.chars() {
            if done < limit {
                out.push_str(new);
                done += 1;
            }
            out.push(c);
        }
        if done < limit {
            out.push_str(new);
        }
        return out;
    }
    src.replacen(old, new, limit)
}

/// The GCE image-name cleaner Packer's googlecompute plugin registers as
/// `clean_resource_name`: a name that is already valid is kept, otherwise it
/// is lowercased and every byte outside `[a-z0-9]` becomes `-`.
pub fn clean_resource_name(s: &str) -> String {
    let valid = regex_lite_valid(s);
    if valid {
        return s.to_string();
    }
    s.to_lowercase()
        .bytes()
        .map(|b| {
            if b.is_ascii_lowercase() || b.is_ascii_digit() {
                b as char
            } else {
                '-'
            }
        })
        .collect()
}

/// `^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`
fn regex_lite_valid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 63 || !b[0].is_ascii_lowercase() {
        return false;
    }
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.len() == 1 || (b[1..].iter().all(|c| ok(c) || *c == b'-') && ok(&b[b.len() - 1]))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Formats a UTC instant with a Go reference-time layout
/// ("2006-01-02T15:04:05Z07:00"), following Go's `time.Format` chunking.
fn go_format(t: &DateTime<Utc>, layout: &str) -> String {
    let mut out = String::new();
    let mut rest = layout;
    let month = t.month() as usize;
    let hour12 = match t.hour() % 12 {
        0 => 12,
        h => h,
    };
    // Longest tokens first, as Go does. Built once: a layout can be long.
    let table: &[(&str, String)] = &[
        ("January", MONTHS[month - 1].to_string()),
        ("Jan", MONTHS[month - 1][..3].to_string()),
        (
            "Monday",
            DAYS[t.weekday().num_days_from_monday() as usize].to_string(),
        ),
        (
            "Mon",
            DAYS[t.weekday().num_days_from_monday() as usize][..3].to_string(),
        ),
        ("MST", "UTC".to_string()),
        ("2006", format!("{:04}", t.year())),
        ("Z07:00:00", "Z".to_string()),
        ("Z070000", "Z".to_string()),
        ("Z07:00", "Z".to_string()),
        ("Z0700", "Z".to_string()),
        ("Z07", "Z".to_string()),
        ("-07:00:00", "+00:00:00".to_string()),
        ("-070000", "+000000".to_string()),
        ("-07:00", "+00:00".to_string()),
        ("-0700", "+0000".to_string()),
        ("-07", "+00".to_string()),
        ("002", format!("{:03}", t.ordinal())),
        ("__2", format!("{:>3}", t.ordinal())),
        ("_2", format!("{:>2}", t.day())),
        ("01", format!("{month:02}")),
        ("02", format!("{:02}", t.day())),
        ("03", format!("{hour12:02}")),
        ("04", format!("{:02}", t.minute())),
        ("05", format!("{:02}", t.second())),
        ("06", format!("{:02}", t.year() % 100)),
        ("15", format!("{:02}", t.hour())),
        ("PM", if t.hour() >= 12 { "PM" } else { "AM" }.to_string()),
        ("pm", if t.hour() >= 12 { "pm" } else { "am" }.to_string()),
        ("1", month.to_string()),
        ("2", t.day().to_string()),
        ("3", hour12.to_string()),
        ("4", t.minute().to_string()),
        ("5", t.second().to_string()),
    ];
    while !rest.is_empty() {
        if let Some((frac_len, text)) = fraction(t, rest) {
            out.push_str(&text);
            rest = &rest[frac_len..];
            continue;
        }
        if let Some((tok, val)) = table.iter().find(|(tok, _)| rest.starts_with(tok)) {
            out.push_str(val);
            rest = &rest[tok.len()..];
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `.000` / `.999` style fractional seconds (also with `,`).
fn fraction(t: &DateTime<Utc>, rest: &str) -> Option<(usize, String)> {
    let mut chars = rest.chars();
    let sep = chars.next()?;
    if sep != '.' && sep != ',' {
        return None;
    }
    let digit = chars.next()?;
    if digit != '0' && digit != '9' {
        return None;
    }
    let n = 1 + rest[1..].chars().take_while(|c| *c == digit).count();
    let digits = n - 1;
    if rest[n..].starts_with(|c: char| c.is_ascii_digit()) || digits > 9 {
        return None;
    }
    let nanos = format!("{:09}", t.nanosecond() % 1_000_000_000);
    let mut frac = nanos[..digits].to_string();
    if digit == '9' {
        frac = frac.trim_end_matches('0').to_string();
        if frac.is_empty() {
            return Some((n, String::new()));
        }
    }
    Some((n, format!("{sep}{frac}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::render::engine::render;
    use chrono::TimeZone;

    fn ctx() -> FuncCtx {
        FuncCtx {
            env_allowed: false,
            vars: BTreeMap::from([("mem".to_string(), "1024".to_string())]),
            failed_vars: BTreeSet::from(["bad".to_string()]),
            build_name: Some("web".into()),
            build_type: Some("qemu".into()),
            template_dir: "/t".into(),
            pwd: "/p".into(),
            now: Utc.with_ymd_and_hms(2024, 3, 5, 14, 7, 9).unwrap()
                + chrono::Duration::milliseconds(120),
            budget: Budget::default(),
        }
    }

    fn r(s: &str) -> Result<String, EvalError> {
        render(s, &ctx())
    }

    #[test]
    fn simple_functions() {
        assert_eq!(r("{{user `mem`}}").unwrap(), "1024");
        assert_eq!(r("{{user `nope`}}").unwrap(), "");
        let mut in_variables = ctx();
        in_variables.env_allowed = true;
        assert_eq!(
            render("{{user `nope`}}", &in_variables).unwrap_err(),
            EvalError::UnknownVariable("nope".into())
        );
        assert_eq!(r("{{user `bad`}}").unwrap_err(), EvalError::AlreadyReported);
        assert_eq!(r("{{ timestamp }}").unwrap(), "1709647629");
        assert_eq!(r("{{isotime}}").unwrap(), "2024-03-05T14:07:09Z");
        assert_eq!(r("{{build_name}}-{{build_type}}").unwrap(), "web-qemu");
        assert_eq!(r("{{template_dir}} {{pwd}}").unwrap(), "/t /p");
        assert_eq!(r("{{ lower `AbC` }}{{ upper `x` }}").unwrap(), "abcX");
        assert_eq!(r("{{ packer_version }}").unwrap(), "1.6.6");
        let u = r("{{uuid}}").unwrap();
        assert_eq!(u.len(), 36);
        assert_ne!(u, r("{{uuid}}").unwrap());
    }

    #[test]
    fn env_only_when_allowed() {
        assert!(
            r("{{env `HOME`}}")
                .unwrap_err()
                .to_string()
                .contains("only allowed")
        );
        let mut c = ctx();
        c.env_allowed = true;
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("KILN_TEST_ENV_FN", "v1") };
        assert_eq!(render("{{env `KILN_TEST_ENV_FN`}}", &c).unwrap(), "v1");
        assert_eq!(render("{{env `KILN_TEST_UNSET_XYZ`}}", &c).unwrap(), "");
    }

    #[test]
    fn secret_stores_say_they_are_offline() {
        let mut c = ctx();
        c.env_allowed = true;
        let e = render("{{ consul_key `app/db/password` }}", &c)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "consul_key \"app/db/password\" is not available offline: kiln does not read Consul \
             (set the value with -var or -var-file instead)"
        );
        let e = render("{{ vault `/secret/data/hello` `foo` }}", &c)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("vault \"/secret/data/hello\" \"foo\" is not available offline"),
            "{e}"
        );
        let e = render("{{ aws_secretsmanager `db` }}", &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("AWS Secrets Manager"), "{e}");
        // Packer's own rules come first: the argument count, then the place.
        assert_eq!(
            render("{{ vault `x` }}", &c).unwrap_err().to_string(),
            "vault takes 2 argument(s), got 1"
        );
        assert_eq!(
            r("{{ consul_key `k` }}").unwrap_err().to_string(),
            "consul_key is only allowed in the default values of the variables section"
        );
        assert!(
            r("{{ sed `s/a/b/` `a` }}")
                .unwrap_err()
                .to_string()
                .contains("use `replace` or `replace_all`")
        );
    }

    #[test]
    fn functions_packer_json_lacks_say_what_to_use() {
        assert_eq!(
            r("{{ join `,` `a` }}").unwrap_err().to_string(),
            "function \"join\" is not defined: Packer's JSON templates have no join \
             (HCL2 templates do); write the text out, or build it with printf"
        );
        assert!(
            r("{{ strftime `%Y` }}")
                .unwrap_err()
                .to_string()
                .contains("use isotime")
        );
    }

    #[test]
    fn split_replace() {
        assert_eq!(r("{{ split `a-b-c` `-` 1 }}").unwrap(), "b");
        assert!(r("{{ split `a-b-c` `-` 5 }}").is_err());
        assert_eq!(r("{{ replace `a` `b` 1 `aaa` }}").unwrap(), "baa");
        assert_eq!(r("{{ replace `a` `b` -1 `aaa` }}").unwrap(), "bbb");
        assert_eq!(r("{{ `aaa` | replace `a` `b` 2 }}").unwrap(), "bba");
        assert_eq!(r("{{ replace_all `-` `_` `a-b-c` }}").unwrap(), "a_b_c");
        assert_eq!(r("{{ `a.b` | replace_all `.` `` | upper }}").unwrap(), "AB");
        assert!(r("{{ replace `a` `b` `x` `aaa` }}").is_err());
        assert!(r("{{ lower }}").is_err());
    }

    #[test]
    fn clean_names() {
        assert_eq!(clean_resource_name("ok-name-1"), "ok-name-1");
        assert_eq!(clean_resource_name("My Image_v1.2"), "my-image-v1-2");
        assert_eq!(clean_resource_name("1abc"), "1abc");
        assert_eq!(clean_resource_name("a-"), "a-");
        assert_eq!(clean_resource_name("é"), "--");
    }

    #[test]
    fn go_layouts() {
        let t = ctx().now;
        assert_eq!(
            go_format(&t, "2006-01-02T15:04:05Z07:00"),
            "2024-03-05T14:07:09Z"
        );
        assert_eq!(go_format(&t, "20060102150405"), "20240305140709");
        assert_eq!(go_format(&t, "Jan _2 3:04PM"), "Mar  5 2:07PM");
        assert_eq!(
            go_format(&t, "Monday January 2 06 -0700 MST"),
            "Tuesday March 5 24 +0000 UTC"
        );
        assert_eq!(go_format(&t, "15:04:05.000"), "14:07:09.120");
        assert_eq!(go_format(&t, "05.999"), "09.12");
        assert_eq!(go_format(&t, "002"), "065");
        assert_eq!(r("{{isotime `2006-01-02`}}").unwrap(), "2024-03-05");
    }
}
