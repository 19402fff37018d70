//! The functions every Go template has (`text/template`'s built-ins), with
//! Go's results and errors. `and` and `or` stop at the first argument that
//! decides them, so the evaluator runs those itself.

use super::engine::{EvalError, Value};
use super::gofmt;

/// The built-ins the evaluator calls through [`call`], and `and`/`or`.
pub(super) const BUILTINS: &[&str] = &[
    "and", "or", "not", "len", "index", "slice", "print", "printf", "println", "html", "js",
    "urlquery", "eq", "ne", "lt", "le", "gt", "ge", "call",
];

fn err(name: &str, m: impl std::fmt::Display) -> EvalError {
    EvalError::Message(format!("error calling {name}: {m}"))
}

fn want(name: &str, args: &[Value], n: usize) -> Result<(), EvalError> {
    if args.len() != n {
        return Err(EvalError::Message(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        )));
    }
    Ok(())
}

fn want_at_least(name: &str, args: &[Value], n: usize) -> Result<(), EvalError> {
    if args.len() < n {
        return Err(EvalError::Message(format!(
            "wrong number of args for {name}: want at least {n} got {}",
            args.len()
        )));
    }
    Ok(())
}

/// Go's truth: false, 0 and the empty string are false.
pub(super) fn truth(v: &Value) -> bool {
    match v {
        Value::Str(s) => !s.is_empty(),
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0,
        Value::Bool(b) => *b,
    }
}

/// Calls built-in `name` (not `and`/`or`) on evaluated arguments.
pub(super) fn call(name: &str, args: &[Value]) -> Result<Value, EvalError> {
    match name {
        "not" => {
            want(name, args, 1)?;
            Ok(Value::Bool(!truth(&args[0])))
        }
        "len" => {
            want(name, args, 1)?;
            match &args[0] {
                Value::Str(s) => Ok(Value::Int(s.len() as i64)),
                other => Err(err(name, format!("len of type {}", type_of(other)))),
            }
        }
        "index" => {
            want_at_least(name, args, 1)?;
            let mut item = args[0].clone();
            for ix in &args[1..] {
                item = index(&item, ix)?;
            }
            Ok(item)
        }
        "slice" => {
            want_at_least(name, args, 1)?;
            slice(&args[0], &args[1..])
        }
        "print" => Ok(Value::Str(gofmt::sprint(args))),
        "println" => Ok(Value::Str(gofmt::sprintln(args))),
        "printf" => {
            want_at_least(name, args, 1)?;
            let Value::Str(format) = &args[0] else {
                return Err(EvalError::Message(format!(
                    "wrong type for value; expected string; got {}",
                    type_of(&args[0])
                )));
            };
            gofmt::sprintf(format, &args[1..]).map(Value::Str)
        }
        "html" => Ok(Value::Str(html(&escaper_arg(args)))),
        "js" => Ok(Value::Str(js(&escaper_arg(args)))),
        "urlquery" => Ok(Value::Str(urlquery(&escaper_arg(args)))),
        "eq" => {
            want_at_least(name, args, 1)?;
            if args.len() < 2 {
                return Err(err(name, "missing argument for comparison"));
            }
            for b in &args[1..] {
                if equal(&args[0], b).map_err(|m| err(name, m))? {
                    return Ok(Value::Bool(true));
                }
            }
            Ok(Value::Bool(false))
        }
        "ne" => {
            want(name, args, 2)?;
            Ok(Value::Bool(
                !equal(&args[0], &args[1]).map_err(|m| err(name, m))?,
            ))
        }
        "lt" | "le" | "gt" | "ge" => {
            want(name, args, 2)?;
            let (a, b) = (&args[0], &args[1]);
            let less = less(a, b).map_err(|m| err(name, m))?;
            let eq = || equal(a, b).map_err(|m| err(name, m));
            Ok(Value::Bool(match name {
                "lt" => less,
                "le" => less || eq()?,
                "gt" => !less && !eq()?,
                _ => !less,
            }))
        }
        "call" => Err(EvalError::Message(
            "call is not supported: a Packer template has no function values".into(),
        )),
        other => Err(EvalError::Message(format!(
            "function {other:?} is not defined"
        ))),
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Str(_) => "string",
        Value::Int(_) => "int",
        Value::Bool(_) => "bool",
        Value::Float(_) => "float64",
    }
}

fn equal(a: &Value, b: &Value) -> Result<bool, &'static str> {
    Ok(match (a, b) {
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        _ => return Err("incompatible types for comparison"),
    })
}

fn less(a: &Value, b: &Value) -> Result<bool, &'static str> {
    Ok(match (a, b) {
        (Value::Str(x), Value::Str(y)) => x < y,
        (Value::Int(x), Value::Int(y)) => x < y,
        (Value::Float(x), Value::Float(y)) => x < y,
        (Value::Bool(_), Value::Bool(_)) => return Err("invalid type for comparison"),
        _ => return Err("incompatible types for comparison"),
    })
}

fn int_index(name: &str, v: &Value) -> Result<i64, EvalError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(err(
            name,
            format!("cannot index slice/array with type {}", type_of(other)),
        )),
    }
}

/// `index` on a string gives the byte, as a number, as in Go.
fn index(item: &Value, ix: &Value) -> Result<Value, EvalError> {
    let Value::Str(s) = item else {
        return Err(err(
            "index",
            format!("can't index item of type {}", type_of(item)),
        ));
    };
    let i = int_index("index", ix)?;
    usize::try_from(i)
        .ok()
        .and_then(|i| s.as_bytes().get(i))
        .map(|b| Value::Int(i64::from(*b)))
        .ok_or_else(|| err("index", format!("index out of range: {i}")))
}

fn slice(item: &Value, ixs: &[Value]) -> Result<Value, EvalError> {
    let Value::Str(s) = item else {
        return Err(err(
            "slice",
            format!("can't slice item of type {}", type_of(item)),
        ));
    };
    if ixs.len() > 2 {
        return Err(err("slice", "cannot 3-index slice a string"));
    }
    let mut bounds = [0, s.len()];
    for (k, ix) in ixs.iter().enumerate() {
        let i = int_index("slice", ix)?;
        bounds[k] = usize::try_from(i)
            .ok()
            .filter(|i| *i <= s.len())
            .ok_or_else(|| err("slice", format!("index out of range: {i}")))?;
    }
    let [i, j] = bounds;
    if i > j {
        return Err(err("slice", format!("invalid slice index: {i} > {j}")));
    }
    s.get(i..j)
        .map(|t| Value::Str(t.to_string()))
        .ok_or_else(|| err("slice", "the indexes split a multi-byte character"))
}

/// What `html`, `js` and `urlquery` escape: a lone string as it is,
/// anything else as `print` writes it.
fn escaper_arg(args: &[Value]) -> String {
    match args {
        [Value::Str(s)] => s.clone(),
        _ => gofmt::sprint(args),
    }
}

/// Go's `template.HTMLEscapeString`.
fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Go's `template.JSEscapeString`.
fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Go's `url.QueryEscape`.
fn urlquery(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
