//! A parser and evaluator for the subset of Go's `text/template` that Packer
//! templates use: `{{ }}` actions holding string literals (double-quoted with
//! escapes, or backquoted), integers, booleans, function calls, pipelines
//! `a | b`, parenthesised sub-pipelines, `.Field` references and comments.
//!
//! Field references are never known at load time, so an action that holds one
//! is kept verbatim for [`super::render_late`] to fill in later.

use std::fmt;

/// The longest text one string may render to. Real values (a script, a
/// boot command) are kilobytes; without a bound, a few variables that each
/// repeat the previous one twice ask for gigabytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// How deep `( )` may nest in one action. Parsing and evaluation recurse
/// once per level, so this bounds their stack use; real templates nest two
/// or three levels.
const MAX_NESTING: usize = 64;

/// The error for a value over [`MAX_VALUE_BYTES`]; callers name the place.
pub fn too_long() -> EvalError {
    EvalError::Message(format!(
        "renders to more than {} (the limit for one value)",
        crate::human::exact_bytes(MAX_VALUE_BYTES)
    ))
}

/// A value flowing through a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Why a string could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    Message(String),
    /// `user` named a variable that has no value (yet): variable resolution
    /// retries these once more variables are known.
    UnknownVariable(String),
    /// `user` named a variable whose own problem is already reported: the
    /// string is abandoned without a second, derived message.
    AlreadyReported,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::Message(m) => f.write_str(m),
            EvalError::UnknownVariable(v) => write!(f, "variable {v:?} is not declared"),
            EvalError::AlreadyReported => f.write_str("refers to a variable that has a problem"),
        }
    }
}

/// What an expression can call and reference.
pub trait Resolver {
    fn is_function(&self, name: &str) -> bool;
    fn call(&self, name: &str, args: &[Value]) -> Result<Value, EvalError>;
    /// `None` keeps the whole action verbatim.
    fn field(&self, name: &str) -> Option<Value>;
    /// Accounts for `bytes` of rendered text against whatever budget the
    /// resolver keeps across strings; an error stops the rendering.
    fn charge(&self, _bytes: usize) -> Result<(), EvalError> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Str(String),
    Int(i64),
    Bool(bool),
    Field(String),
    Ident(String),
    Paren(Pipeline),
}

#[derive(Debug, Clone, PartialEq)]
struct Pipeline(Vec<Vec<Operand>>);

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    Action {
        /// The action as written, `{{` to `}}`, to keep it verbatim.
        src: String,
        trim_left: bool,
        trim_right: bool,
        /// `None` for a comment.
        pipeline: Option<Pipeline>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    Pipe,
    Str(String),
    Int(i64),
    Ident(String),
    Field(String),
}

/// A parsed template string.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Segment>);

impl Template {
    /// Parses `text`; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Template, String> {
        parse(text).map(Template)
    }

    /// Renders with `r`'s functions and fields; an action that refers to an
    /// unknown field is kept as written.
    pub fn render(&self, r: &dyn Resolver) -> Result<String, EvalError> {
        let mut outputs: Vec<Option<String>> = Vec::with_capacity(self.0.len());
        // Checked as the outputs accumulate, so a string of many actions
        // that each yield a large value stops at the first one over.
        let mut size = 0usize;
        for seg in &self.0 {
            let output = match seg {
                Segment::Text(t) => {
                    size = size.saturating_add(t.len());
                    None
                }
                Segment::Action { pipeline: None, .. } => Some(String::new()),
                Segment::Action {
                    pipeline: Some(p),
                    src,
                    ..
                } => {
                    check_functions(p, r)?;
                    let v = eval_pipeline(p, r)?.map(|v| v.to_string());
                    match &v {
                        Some(v) => {
                            size = size.saturating_add(v.len());
                            r.charge(v.len())?;
                        }
                        // Kept verbatim for the late pass.
                        None => size = size.saturating_add(src.len()),
                    }
                    v
                }
            };
            // Text alone is bounded by the input; only what actions add is
            // held to the limit.
            if output.is_some() && size > MAX_VALUE_BYTES {
                return Err(too_long());
            }
            outputs.push(output);
        }
        let mut out = String::new();
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Text(t) => {
                    let mut t = t.as_str();
                    // Trimming only applies next to actions that were evaluated:
                    // a kept action keeps its markers for the later pass.
                    if i > 0
                        && outputs[i - 1].is_some()
                        && matches!(
                            self.0[i - 1],
                            Segment::Action {
                                trim_right: true,
                                ..
                            }
                        )
                    {
                        t = t.trim_start();
                    }
                    if i + 1 < self.0.len()
                        && outputs[i + 1].is_some()
                        && matches!(
                            self.0[i + 1],
                            Segment::Action {
                                trim_left: true,
                                ..
                            }
                        )
                    {
                        t = t.trim_end();
                    }
                    out.push_str(t);
                }
                Segment::Action { src, .. } => match &outputs[i] {
                    Some(v) => out.push_str(v),
                    None => out.push_str(src),
                },
            }
        }
        Ok(out)
    }
}

impl Template {
    /// The variables named by a literal `user` call (`{{user `a`}}`): what
    /// must be resolved before this text renders. A name computed at render
    /// time is not listed; rendering reports it as unknown.
    pub fn user_refs(&self) -> Vec<String> {
        fn walk(p: &Pipeline, out: &mut Vec<String>) {
            for cmd in &p.0 {
                if let [Operand::Ident(f), Operand::Str(name)] = cmd.as_slice()
                    && f == "user"
                {
                    out.push(name.clone());
                }
                for op in cmd {
                    if let Operand::Paren(inner) = op {
                        walk(inner, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for seg in &self.0 {
            if let Segment::Action {
                pipeline: Some(p), ..
            } = seg
            {
                walk(p, &mut out);
            }
        }
        out
    }
}

/// Parses and renders in one go.
pub fn render(text: &str, r: &dyn Resolver) -> Result<String, EvalError> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    Template::parse(text).map_err(EvalError::Message)?.render(r)
}

fn check_functions(p: &Pipeline, r: &dyn Resolver) -> Result<(), EvalError> {
    for cmd in &p.0 {
        for op in cmd {
            match op {
                Operand::Ident(name) if !r.is_function(name) => {
                    return Err(EvalError::Message(format!(
                        "function {name:?} is not defined"
                    )));
                }
                Operand::Paren(inner) => check_functions(inner, r)?,
                _ => {}
            }
        }
    }
    Ok(())
}

fn eval_pipeline(p: &Pipeline, r: &dyn Resolver) -> Result<Option<Value>, EvalError> {
    let mut piped: Option<Value> = None;
    for cmd in &p.0 {
        match eval_command(cmd, piped.take(), r)? {
            Some(v) => piped = Some(v),
            None => return Ok(None),
        }
    }
    Ok(piped)
}

fn eval_command(
    cmd: &[Operand],
    piped: Option<Value>,
    r: &dyn Resolver,
) -> Result<Option<Value>, EvalError> {
    let Some((first, rest)) = cmd.split_first() else {
        return Err(EvalError::Message("empty command".into()));
    };
    if let Operand::Ident(name) = first {
        let mut args = Vec::with_capacity(rest.len() + 1);
        for op in rest {
            match eval_operand(op, r)? {
                Some(v) => args.push(v),
                None => return Ok(None),
            }
        }
        args.extend(piped);
        return r.call(name, &args).map(Some);
    }
    if !rest.is_empty() || piped.is_some() {
        return Err(EvalError::Message(
            "cannot give arguments to a value that is not a function".into(),
        ));
    }
    eval_operand(first, r)
}

fn eval_operand(op: &Operand, r: &dyn Resolver) -> Result<Option<Value>, EvalError> {
    Ok(match op {
        Operand::Str(s) => Some(Value::Str(s.clone())),
        Operand::Int(i) => Some(Value::Int(*i)),
        Operand::Bool(b) => Some(Value::Bool(*b)),
        Operand::Field(f) => r.field(f),
        // A bare identifier as an argument is a call without arguments, as in Go.
        Operand::Ident(name) => Some(r.call(name, &[])?),
        Operand::Paren(p) => eval_pipeline(p, r)?,
    })
}

fn parse(text: &str) -> Result<Vec<Segment>, String> {
    let mut segs = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            segs.push(Segment::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let (len, seg) = parse_action(after).map_err(|e| {
            format!(
                "{e} (in the action starting at character {})",
                offset + start + 1
            )
        })?;
        let src_end = start + 2 + len;
        let src = rest[start..src_end].to_string();
        segs.push(match seg {
            Segment::Action {
                trim_left,
                trim_right,
                pipeline,
                ..
            } => Segment::Action {
                src,
                trim_left,
                trim_right,
                pipeline,
            },
            other => other,
        });
        offset += src_end;
        rest = &rest[src_end..];
    }
    if !rest.is_empty() {
        segs.push(Segment::Text(rest.to_string()));
    }
    Ok(segs)
}

/// Parses one action from just after its `{{`; returns how many bytes it
/// used, through the closing `}}`.
fn parse_action(s: &str) -> Result<(usize, Segment), String> {
    let mut i = 0;
    let mut trim_left = false;
    if s.as_bytes().first() == Some(&b'-')
        && s.as_bytes().get(1).is_some_and(|b| b.is_ascii_whitespace())
    {
        trim_left = true;
        i = 1;
    }
    // Comments: `{{/* ... */}}`, optionally with trim markers.
    let after_ws = i + s[i..].len() - s[i..].trim_start().len();
    if s[after_ws..].starts_with("/*") {
        let (end, trim_right) = parse_comment(s, after_ws)?;
        return Ok((
            end,
            Segment::Action {
                src: String::new(),
                trim_left,
                trim_right,
                pipeline: None,
            },
        ));
    }
    let (tokens, end, trim_right) = lex_action(s, i)?;
    let mut pos = 0;
    let pipeline = parse_pipeline(&tokens, &mut pos, 0)?;
    if pos != tokens.len() {
        return Err("unexpected )".into());
    }
    Ok((
        end,
        Segment::Action {
            src: String::new(),
            trim_left,
            trim_right,
            pipeline: Some(pipeline),
        },
    ))
}

/// A comment starting at `start` (its `/*`) through the action's `}}`:
/// returns the bytes used from the start of the action and whether it ends
/// with a trim marker.
fn parse_comment(s: &str, start: usize) -> Result<(usize, bool), String> {
    let Some(end) = s[start + 2..].find("*/") else {
        return Err("unterminated comment".into());
    };
    let j = start + 2 + end + 2;
    let tail = &s[j..];
    let trimmed = tail.trim_start();
    if let Some(t) = trimmed.strip_prefix("-}}") {
        Ok((j + tail.len() - t.len(), true))
    } else if let Some(t) = trimmed.strip_prefix("}}") {
        Ok((j + tail.len() - t.len(), false))
    } else {
        Err("comment must be followed by }}".into())
    }
}

/// Splits an action into tokens from byte `i` up to its closing `}}`;
/// returns them, the bytes used through the `}}`, and whether the action
/// ends with a trim marker (` -}}`).
fn lex_action(s: &str, mut i: usize) -> Result<(Vec<Token>, usize, bool), String> {
    let bytes = s.as_bytes();
    let mut tokens = Vec::new();
    loop {
        let Some(&c) = bytes.get(i) else {
            return Err("unterminated {{: missing }}".into());
        };
        if s[i..].starts_with("}}") {
            return Ok((tokens, i + 2, false));
        }
        if c == b'-' && s[i + 1..].starts_with("}}") && i > 0 && bytes[i - 1].is_ascii_whitespace()
        {
            return Ok((tokens, i + 3, true));
        }
        if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
            continue;
        }
        let (len, token) = lex_token(s, i)?;
        tokens.push(token);
        i += len;
    }
}

/// The token at byte `i` (not a space): returns its length and the token.
fn lex_token(s: &str, i: usize) -> Result<(usize, Token), String> {
    // What follows a one-byte (ASCII) start.
    let rest = || &s[i + 1..];
    Ok(match s.as_bytes()[i] {
        b'(' => (1, Token::LParen),
        b')' => (1, Token::RParen),
        b'|' => (1, Token::Pipe),
        b'`' => {
            let Some(close) = rest().find('`') else {
                return Err("unterminated raw string".into());
            };
            (close + 2, Token::Str(rest()[..close].to_string()))
        }
        b'"' => {
            let (len, value) = lex_quoted(&s[i..])?;
            (len, Token::Str(value))
        }
        b'.' => {
            let name = rest();
            let name_len = name
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '.'))
                .unwrap_or(name.len());
            (1 + name_len, Token::Field(name[..name_len].to_string()))
        }
        b'-' | b'+' | b'0'..=b'9' => {
            let digits = rest();
            let len = digits
                .find(|ch: char| !ch.is_ascii_digit())
                .unwrap_or(digits.len())
                + 1;
            let lit = &s[i..i + len];
            let n = lit
                .parse::<i64>()
                .map_err(|_| format!("bad number {lit:?}"))?;
            (len, Token::Int(n))
        }
        c if c.is_ascii_alphabetic() || c == b'_' => {
            let len = s[i..]
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                .unwrap_or(s.len() - i);
            (len, Token::Ident(s[i..i + len].to_string()))
        }
        b'$' => return Err("template variables ($x) are not supported".into()),
        _ => {
            let ch = s[i..].chars().next().unwrap_or('?');
            return Err(format!("unexpected character {ch:?}"));
        }
    })
}

/// Lexes a Go double-quoted string; returns the bytes used and its value.
fn lex_quoted(s: &str) -> Result<(usize, String), String> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((i + 1, out)),
            '\n' => break,
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    '\'' => out.push('\''),
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'v' => out.push('\x0b'),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = (0..n)
                            .filter_map(|_| chars.next().map(|(_, c)| c))
                            .collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == n)
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("bad escape \\{e}{hex}"))?;
                        out.push(code);
                    }
                    other => return Err(format!("unknown escape \\{other} in string")),
                }
            }
            c => out.push(c),
        }
    }
    Err("unterminated quoted string".into())
}

fn parse_pipeline(tokens: &[Token], pos: &mut usize, depth: usize) -> Result<Pipeline, String> {
    let mut cmds = Vec::new();
    let mut cmd = Vec::new();
    while let Some(tok) = tokens.get(*pos) {
        match tok {
            Token::RParen => break,
            Token::Pipe => {
                if cmd.is_empty() {
                    return Err("missing command before |".into());
                }
                cmds.push(std::mem::take(&mut cmd));
                *pos += 1;
                continue;
            }
            Token::LParen => {
                if depth >= MAX_NESTING {
                    return Err(format!("parentheses nested more than {MAX_NESTING} deep"));
                }
                *pos += 1;
                let inner = parse_pipeline(tokens, pos, depth + 1)?;
                if tokens.get(*pos) != Some(&Token::RParen) {
                    return Err("unclosed (".into());
                }
                if inner.0.is_empty() {
                    return Err("empty ( )".into());
                }
                cmd.push(Operand::Paren(inner));
            }
            Token::Str(s) => cmd.push(Operand::Str(s.clone())),
            Token::Int(n) => cmd.push(Operand::Int(*n)),
            Token::Field(f) => cmd.push(Operand::Field(f.clone())),
            Token::Ident(id) => cmd.push(match id.as_str() {
                "true" => Operand::Bool(true),
                "false" => Operand::Bool(false),
                _ => Operand::Ident(id.clone()),
            }),
        }
        *pos += 1;
    }
    if cmd.is_empty() {
        if cmds.is_empty() {
            return Err("empty action".into());
        }
        return Err("missing command after |".into());
    }
    cmds.push(cmd);
    Ok(Pipeline(cmds))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Joins its arguments with `+`; fields named `Known` are known.
    struct Echo;
    impl Resolver for Echo {
        fn is_function(&self, name: &str) -> bool {
            matches!(name, "join" | "zero")
        }
        fn call(&self, name: &str, args: &[Value]) -> Result<Value, EvalError> {
            match name {
                "zero" => Ok(Value::Str("0".into())),
                _ => Ok(Value::Str(
                    args.iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join("+"),
                )),
            }
        }
        fn field(&self, name: &str) -> Option<Value> {
            (name == "Known").then(|| Value::Str("K".into()))
        }
    }

    fn r(s: &str) -> Result<String, EvalError> {
        render(s, &Echo)
    }

    #[test]
    fn literals_and_quotes() {
        assert_eq!(r("a{{ \"x\\ty\\\"\" }}b").unwrap(), "ax\ty\"b");
        assert_eq!(r("{{`raw \\n`}}").unwrap(), "raw \\n");
        assert_eq!(r("{{ \"\\u00e9\" }}").unwrap(), "é");
        assert_eq!(r("{{ 42 }}").unwrap(), "42");
        assert_eq!(r("{{ true }}").unwrap(), "true");
        assert_eq!(r("{{ \"}}\" }}").unwrap(), "}}");
        assert_eq!(r("no actions").unwrap(), "no actions");
    }

    #[test]
    fn calls_pipelines_and_nesting() {
        assert_eq!(r("{{join `a` 1}}").unwrap(), "a+1");
        assert_eq!(r("{{ `a` | join `b` }}").unwrap(), "b+a");
        assert_eq!(r("{{ join (join `x` `y`) `z` }}").unwrap(), "x+y+z");
        assert_eq!(r("{{ join zero `z` }}").unwrap(), "0+z");
        assert_eq!(r("{{ `a` | join `b` | join `c` }}").unwrap(), "c+b+a");
    }

    #[test]
    fn late_references_kept_verbatim() {
        assert_eq!(
            r("x {{ .Vars }} {{.Path}}").unwrap(),
            "x {{ .Vars }} {{.Path}}"
        );
        assert_eq!(
            r("{{ .Name | join `a` }}").unwrap(),
            "{{ .Name | join `a` }}"
        );
        assert_eq!(r("{{ .Known }}").unwrap(), "K");
        assert_eq!(r("a {{- .Path -}} b").unwrap(), "a {{- .Path -}} b");
    }

    #[test]
    fn trimming_and_comments() {
        assert_eq!(r("a  {{- `x` -}}  b").unwrap(), "axb");
        assert_eq!(r("a {{/* note */}}b").unwrap(), "a b");
        assert_eq!(r("a {{- /* note */ -}} b").unwrap(), "ab");
        assert_eq!(r("{{ -1 }}").unwrap(), "-1");
    }

    #[test]
    fn errors() {
        let e = r("abc {{ `x` ").unwrap_err().to_string();
        assert!(e.contains("unterminated {{"), "{e}");
        assert!(r("{{ \"abc }}").is_err());
        assert!(r("{{ }}").is_err());
        assert!(r("{{ `a` | }}").is_err());
        assert!(r("{{ (join `a` }}").is_err());
        assert!(r("{{ $x }}").is_err());
        assert_eq!(
            r("{{ nope 1 }}").unwrap_err().to_string(),
            "function \"nope\" is not defined"
        );
        // Unknown functions are reported even beside a late reference.
        assert!(r("{{ .Path | nope }}").is_err());
        assert!(r("{{ `a` `b` }}").is_err());
    }
}
