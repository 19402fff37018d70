//! Go's `fmt` printing of template values: `%v`, `fmt.Sprint`,
//! `fmt.Sprintln` and `fmt.Sprintf` with its verbs, flags, width and
//! precision, down to the `%!d(string=x)` Go writes for a mismatch.

use super::engine::{EvalError, MAX_VALUE_BYTES, Value, too_long};

/// Go's `%v` of a value: what an action prints.
pub(super) fn plain(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Float(f) => float_g(*f, None, false),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Str(_) => "string",
        Value::Int(_) => "int",
        Value::Bool(_) => "bool",
        Value::Float(_) => "float64",
    }
}

/// `fmt.Sprint`: a space between operands when neither is a string.
pub(super) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        let is_str = |v: &Value| matches!(v, Value::Str(_));
        if i > 0 && !is_str(a) && !is_str(&args[i - 1]) {
            out.push(' ');
        }
        out.push_str(&plain(a));
    }
    out
}

/// `fmt.Sprintln`: spaces between all operands and a newline.
pub(super) fn sprintln(args: &[Value]) -> String {
    let mut out = args.iter().map(plain).collect::<Vec<_>>().join(" ");
    out.push('\n');
    out
}

/// `%g` (shortest when `prec` is `None`), as Go's `strconv` writes it.
fn float_g(f: f64, prec: Option<usize>, upper: bool) -> String {
    if let Some(s) = special(f) {
        return s.to_string();
    }
    // Go's shortest form switches to an exponent from 1e+06 on.
    let (e_form, eprec) = match prec {
        None => (format!("{f:e}"), 6),
        Some(p) => (format!("{:.*e}", p.max(1) - 1, f), p.max(1) as i32),
    };
    let (mant, exp) = e_form.split_once('e').unwrap_or((&e_form, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let s = if exp < -4 || exp >= eprec {
        let mant = if prec.is_some() {
            trim_zeros(mant)
        } else {
            mant.to_string()
        };
        format!("{mant}e{}", exp_text(exp))
    } else {
        let digits = mant.trim_start_matches('-').replace('.', "").len() as i32;
        let decimals = (digits - 1 - exp).max(0) as usize;
        let fixed = format!("{f:.decimals$}");
        if prec.is_some() {
            trim_zeros(&fixed)
        } else {
            fixed
        }
    };
    if upper { s.to_uppercase() } else { s }
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

fn exp_text(exp: i32) -> String {
    format!("{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

fn special(f: f64) -> Option<&'static str> {
    if f.is_nan() {
        Some("NaN")
    } else if f == f64::INFINITY {
        Some("+Inf")
    } else if f == f64::NEG_INFINITY {
        Some("-Inf")
    } else {
        None
    }
}

/// Go's `strconv.Quote`.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[derive(Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Go's "too large" bound on a width or precision.
const MAX_NUM: usize = 1_000_000;

/// `fmt.Sprintf`.
pub(super) fn sprintf(format: &str, args: &[Value]) -> Result<String, EvalError> {
    let mut out = String::new();
    let mut arg = 0;
    let mut reordered = false;
    let b = format.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i] != b'%' {
            i += 1;
        }
        out.push_str(&format[start..i]);
        if i >= b.len() {
            break;
        }
        i += 1;
        let mut spec = Spec::default();
        while let Some(&c) = b.get(i) {
            match c {
                b'#' => spec.sharp = true,
                b'0' => spec.zero = !spec.minus,
                b'+' => spec.plus = true,
                b'-' => {
                    spec.minus = true;
                    spec.zero = false;
                }
                b' ' => spec.space = true,
                _ => break,
            }
            i += 1;
        }
        let mut good_index = true;
        let (mut after_index, ok) = arg_index(b, &mut i, &mut arg, args.len());
        good_index &= ok;
        reordered |= after_index;
        if b.get(i) == Some(&b'*') {
            i += 1;
            match args.get(arg) {
                Some(Value::Int(n)) if n.unsigned_abs() as usize <= MAX_NUM => {
                    if *n < 0 {
                        spec.minus = true;
                        spec.zero = false;
                    }
                    spec.width = Some(n.unsigned_abs() as usize);
                }
                _ => out.push_str("%!(BADWIDTH)"),
            }
            arg += 1;
            after_index = false;
        } else {
            match parse_num(b, &mut i) {
                Some(n) => {
                    spec.width = n;
                    if after_index && n.is_some() {
                        good_index = false;
                    }
                }
                None => {
                    out.push_str("%!(NOVERB)");
                    break;
                }
            }
        }
        if i + 1 < b.len() && b[i] == b'.' {
            i += 1;
            if after_index {
                good_index = false;
            }
            let (a, ok) = arg_index(b, &mut i, &mut arg, args.len());
            after_index = a;
            good_index &= ok;
            reordered |= a;
            if b.get(i) == Some(&b'*') {
                i += 1;
                match args.get(arg) {
                    Some(Value::Int(n)) if *n >= 0 && *n as usize <= MAX_NUM => {
                        spec.prec = Some(*n as usize)
                    }
                    Some(Value::Int(n)) if *n < 0 => spec.prec = None,
                    _ => out.push_str("%!(BADPREC)"),
                }
                arg += 1;
                after_index = false;
            } else {
                match parse_num(b, &mut i) {
                    Some(n) => spec.prec = Some(n.unwrap_or(0)),
                    None => {
                        out.push_str("%!(NOVERB)");
                        break;
                    }
                }
            }
        }
        if !after_index {
            let (a, ok) = arg_index(b, &mut i, &mut arg, args.len());
            good_index &= ok;
            reordered |= a;
        }
        let Some(verb) = format[i..].chars().next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        i += verb.len_utf8();
        if verb == '%' {
            out.push('%');
        } else if !good_index {
            out.push_str(&format!("%!{verb}(BADINDEX)"));
        } else if let Some(v) = args.get(arg) {
            if spec.width.unwrap_or(0) > MAX_VALUE_BYTES || spec.prec.unwrap_or(0) > MAX_VALUE_BYTES
            {
                return Err(too_long());
            }
            out.push_str(&one(v, verb, spec));
            arg += 1;
        } else {
            out.push_str(&format!("%!{verb}(MISSING)"));
        }
        if out.len() > MAX_VALUE_BYTES {
            return Err(too_long());
        }
    }
    if !reordered && arg < args.len() {
        let extra: Vec<String> = args[arg..]
            .iter()
            .map(|v| format!("{}={}", type_name(v), plain(v)))
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    Ok(out)
}

/// A number in a verb: `Some(None)` for none, `None` for one too large
/// (Go then gives up on the rest of the format).
fn parse_num(b: &[u8], i: &mut usize) -> Option<Option<usize>> {
    let mut n: Option<usize> = None;
    while let Some(&c) = b.get(*i) {
        if !c.is_ascii_digit() {
            break;
        }
        if n.unwrap_or(0) > MAX_NUM {
            *i = b.len();
            return None;
        }
        n = Some(n.unwrap_or(0) * 10 + usize::from(c - b'0'));
        *i += 1;
    }
    Some(n)
}

/// An explicit argument index `[n]`: whether there was one, and whether it
/// is good.
fn arg_index(b: &[u8], i: &mut usize, arg: &mut usize, n: usize) -> (bool, bool) {
    if b.get(*i) != Some(&b'[') {
        return (false, true);
    }
    let Some(close) = b[*i..].iter().position(|&c| c == b']') else {
        *i += 1;
        return (false, false);
    };
    let digits = std::str::from_utf8(&b[*i + 1..*i + close]).unwrap_or("");
    *i += close + 1;
    match digits.parse::<usize>() {
        Ok(k) if k >= 1 && k <= n => {
            *arg = k - 1;
            (true, true)
        }
        _ => (true, false),
    }
}

fn bad(v: &Value, verb: char) -> String {
    format!("%!{verb}({}={})", type_name(v), plain(v))
}

/// One operand under one verb.
fn one(v: &Value, verb: char, spec: Spec) -> String {
    match (v, verb) {
        (_, 'v') if spec.sharp => match v {
            Value::Str(s) => pad(&quote(s), spec),
            _ => one(
                v,
                'v',
                Spec {
                    sharp: false,
                    ..spec
                },
            ),
        },
        (Value::Str(s), 's' | 'v') => {
            let s = truncate(s, spec.prec);
            pad(s, spec)
        }
        (Value::Str(s), 'q') => pad(&quote(truncate(s, spec.prec)), spec),
        (Value::Str(s), 'x' | 'X') => {
            let bytes = truncate_bytes(s.as_bytes(), spec.prec);
            let mut h = String::new();
            for (k, byte) in bytes.iter().enumerate() {
                if spec.space && k > 0 {
                    h.push(' ');
                }
                if spec.sharp && (spec.space || k == 0) {
                    h.push_str(if verb == 'x' { "0x" } else { "0X" });
                }
                h.push_str(&if verb == 'x' {
                    format!("{byte:02x}")
                } else {
                    format!("{byte:02X}")
                });
            }
            pad(&h, spec)
        }
        (Value::Bool(b), 't' | 'v') => pad(&b.to_string(), spec),
        (Value::Int(n), 'd' | 'v') => int(*n, 10, "", spec, false),
        (Value::Int(n), 'b') => int(*n, 2, "0b", spec, false),
        (Value::Int(n), 'o') => int(*n, 8, "0", spec, false),
        (Value::Int(n), 'O') => int(
            *n,
            8,
            "0o",
            Spec {
                sharp: true,
                ..spec
            },
            false,
        ),
        (Value::Int(n), 'x') => int(*n, 16, "0x", spec, false),
        (Value::Int(n), 'X') => int(*n, 16, "0X", spec, true),
        (Value::Int(n), 'c') => pad(&char_of(*n).to_string(), spec),
        (Value::Int(n), 'q') => {
            let c = char_of(*n);
            let q = quote(&c.to_string());
            let inner = &q[1..q.len() - 1];
            let inner = if c == '\'' {
                "\\'"
            } else if c == '"' {
                "\""
            } else {
                inner
            };
            pad(&format!("'{inner}'"), spec)
        }
        (Value::Int(n), 'U') => pad(&format!("U+{:04X}", n), spec),
        (Value::Float(f), 'v' | 'g' | 'G') => {
            let prec = if verb == 'v' { None } else { spec.prec };
            sign_pad(float_g(*f, prec, verb == 'G'), spec)
        }
        (Value::Float(f), 'f' | 'F') => match special(*f) {
            Some(s) => sign_pad(s.to_string(), spec),
            None => sign_pad(format!("{:.*}", spec.prec.unwrap_or(6), f), spec),
        },
        (Value::Float(f), 'e' | 'E') => match special(*f) {
            Some(s) => sign_pad(s.to_string(), spec),
            None => {
                let s = format!("{:.*e}", spec.prec.unwrap_or(6), f);
                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                let s = format!("{m}e{}", exp_text(e.parse().unwrap_or(0)));
                sign_pad(if verb == 'E' { s.to_uppercase() } else { s }, spec)
            }
        },
        _ => bad(v, verb),
    }
}

fn char_of(n: i64) -> char {
    u32::try_from(n)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or('\u{fffd}')
}

fn truncate(s: &str, prec: Option<usize>) -> &str {
    match prec.and_then(|p| s.char_indices().nth(p)) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn truncate_bytes(b: &[u8], prec: Option<usize>) -> &[u8] {
    &b[..prec.unwrap_or(b.len()).min(b.len())]
}

/// A number with its sign, `+`/space flag and zero padding placed as Go does.
fn sign_pad(s: String, spec: Spec) -> String {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d.to_string()),
        None => (false, s.strip_prefix('+').map(str::to_string).unwrap_or(s)),
    };
    let sign = if neg {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    };
    let finite = digits.chars().next().is_some_and(|c| c.is_ascii_digit());
    numeric(sign, &digits, spec, finite)
}

fn int(n: i64, radix: u32, prefix: &str, spec: Spec, upper: bool) -> String {
    let mag = n.unsigned_abs();
    let mut digits = match radix {
        2 => format!("{mag:b}"),
        8 => format!("{mag:o}"),
        16 if upper => format!("{mag:X}"),
        16 => format!("{mag:x}"),
        _ => mag.to_string(),
    };
    if let Some(p) = spec.prec {
        if p == 0 && n == 0 {
            digits.clear();
        }
        while digits.len() < p {
            digits.insert(0, '0');
        }
    }
    if spec.sharp && !prefix.is_empty() && !(radix == 8 && digits.starts_with('0')) {
        digits.insert_str(0, prefix);
    }
    let sign = if n < 0 {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    };
    numeric(sign, &digits, spec, spec.prec.is_none())
}

/// Pads `sign` + `digits` to the width: zeros go between sign and digits.
fn numeric(sign: &str, digits: &str, spec: Spec, zero_ok: bool) -> String {
    let len = sign.len() + digits.chars().count();
    let width = spec.width.unwrap_or(0);
    if spec.zero && zero_ok && !spec.minus && width > len {
        return format!("{sign}{}{digits}", "0".repeat(width - len));
    }
    pad(
        &format!("{sign}{digits}"),
        Spec {
            zero: false,
            ..spec
        },
    )
}

fn pad(s: &str, spec: Spec) -> String {
    let len = s.chars().count();
    let width = spec.width.unwrap_or(0);
    if width <= len {
        return s.to_string();
    }
    let fill = if spec.zero { "0" } else { " " }.repeat(width - len);
    if spec.minus {
        format!("{s}{fill}")
    } else {
        format!("{fill}{s}")
    }
}
