//! The parser: a template string into text and actions, and the actions into
//! the tree of `if`/`with`/`range` blocks Go's `text/template` builds.

/// How deep `( )` and blocks may nest. Parsing and evaluation recurse once
/// per level, so this bounds their stack use; real templates nest two or
/// three levels.
pub(super) const MAX_NESTING: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Operand {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// `.Name` (`.A.B` as `A.B`); `.` alone is the empty name.
    Field(String),
    /// `$x` or `$x.Field`: the variable (`$` alone is the empty name) and
    /// the field, empty for the variable itself.
    Var(String, String),
    Ident(String),
    Paren(Pipeline),
}

/// `$x := ...` / `$i, $e := ...` (declare) or `$x = ...` (assign).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Decl {
    pub vars: Vec<String>,
    pub assign: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Pipeline {
    pub decl: Option<Decl>,
    pub cmds: Vec<Vec<Operand>>,
}

/// One `{{ }}` as written: its number in the string (for trimming) and its
/// source (to keep it verbatim).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Act {
    pub id: usize,
    pub src: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlockKind {
    If,
    With,
    Range,
}

impl BlockKind {
    pub fn name(self) -> &'static str {
        match self {
            BlockKind::If => "if",
            BlockKind::With => "with",
            BlockKind::Range => "range",
        }
    }
}

/// `{{if P}}` or `{{else if P}}` and its body.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Branch {
    pub head: Act,
    pub pipe: Pipeline,
    pub body: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Block {
    pub kind: BlockKind,
    pub branches: Vec<Branch>,
    pub otherwise: Option<(Act, Vec<Node>)>,
    pub end: Act,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    /// Text, and the actions whose trim markers (`-}}` before it, `{{-`
    /// after it) remove its leading or trailing white space.
    Text {
        text: String,
        trim_start: Option<usize>,
        trim_end: Option<usize>,
    },
    Comment(Act),
    Print(Act, Pipeline),
    Block(Box<Block>),
    Break(Act),
    Continue(Act),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    Pipe,
    Comma,
    Declare,
    Assign,
    Str(String),
    Int(i64),
    Float(f64),
    Ident(String),
    Field(String),
    Var(String, String),
}

/// One action before the tree is built.
struct Raw {
    act: Act,
    /// Where it starts, 1-based, for messages.
    at: usize,
    trim_left: bool,
    trim_right: bool,
    /// `None` for a comment.
    tokens: Option<Vec<Token>>,
}

enum Item {
    Text(String),
    Action(Raw),
}

/// Parses `text` into its tree; the error says what is wrong and where.
pub(super) fn parse(text: &str) -> Result<Vec<Node>, String> {
    let items = scan(text)?;
    build(items)
}

fn scan(text: &str) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    let mut id = 0;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            items.push(Item::Text(rest[..start].to_string()));
        }
        let at = offset + start + 1;
        let (len, trim_left, trim_right, tokens) = scan_action(&rest[start + 2..])
            .map_err(|e| format!("{e} (in the action starting at character {at})"))?;
        let src_end = start + 2 + len;
        items.push(Item::Action(Raw {
            act: Act {
                id,
                src: rest[start..src_end].to_string(),
            },
            at,
            trim_left,
            trim_right,
            tokens,
        }));
        id += 1;
        offset += src_end;
        rest = &rest[src_end..];
    }
    if !rest.is_empty() {
        items.push(Item::Text(rest.to_string()));
    }
    Ok(items)
}

/// One action from just after its `{{`: the bytes used through `}}`, its
/// trim markers and its tokens (`None` for a comment).
type Scanned = (usize, bool, bool, Option<Vec<Token>>);

fn scan_action(s: &str) -> Result<Scanned, String> {
    let mut i = 0;
    let mut trim_left = false;
    if s.as_bytes().first() == Some(&b'-')
        && s.as_bytes().get(1).is_some_and(|b| b.is_ascii_whitespace())
    {
        trim_left = true;
        i = 1;
    }
    let after_ws = i + s[i..].len() - s[i..].trim_start().len();
    if s[after_ws..].starts_with("/*") {
        let (end, trim_right) = scan_comment(s, after_ws)?;
        return Ok((end, trim_left, trim_right, None));
    }
    let (tokens, end, trim_right) = lex_action(s, i)?;
    Ok((end, trim_left, trim_right, Some(tokens)))
}

fn scan_comment(s: &str, start: usize) -> Result<(usize, bool), String> {
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

fn name_len(s: &str) -> usize {
    s.find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
        .unwrap_or(s.len())
}

fn field_len(s: &str) -> usize {
    s.find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '.'))
        .unwrap_or(s.len())
}

/// The token at byte `i` (not a space): returns its length and the token.
fn lex_token(s: &str, i: usize) -> Result<(usize, Token), String> {
    let rest = s.get(i + 1..).unwrap_or("");
    Ok(match s.as_bytes()[i] {
        b'(' => (1, Token::LParen),
        b')' => (1, Token::RParen),
        b'|' => (1, Token::Pipe),
        b',' => (1, Token::Comma),
        b'=' => (1, Token::Assign),
        b':' if rest.starts_with('=') => (2, Token::Declare),
        b'`' => {
            let Some(close) = rest.find('`') else {
                return Err("unterminated raw string".into());
            };
            (close + 2, Token::Str(rest[..close].to_string()))
        }
        b'"' => {
            let (len, value) = lex_quoted(&s[i..], '"')?;
            (len, Token::Str(value))
        }
        b'\'' => {
            let (len, value) = lex_quoted(&s[i..], '\'')?;
            let mut chars = value.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => (len, Token::Int(i64::from(u32::from(c)))),
                _ => return Err(format!("bad character constant {:?}", &s[i..i + len])),
            }
        }
        b'.' if rest.starts_with(|c: char| c.is_ascii_digit()) => lex_number(s, i)?,
        b'.' => {
            let n = field_len(rest);
            (1 + n, Token::Field(rest[..n].to_string()))
        }
        b'$' => {
            let n = name_len(rest);
            let name = rest[..n].to_string();
            let field = &rest[n..];
            if let Some(f) = field.strip_prefix('.') {
                let m = field_len(f);
                (2 + n + m, Token::Var(name, f[..m].to_string()))
            } else {
                (1 + n, Token::Var(name, String::new()))
            }
        }
        b'-' | b'+' | b'0'..=b'9' => lex_number(s, i)?,
        c if c.is_ascii_alphabetic() || c == b'_' => {
            let n = name_len(&s[i..]);
            (n, Token::Ident(s[i..i + n].to_string()))
        }
        _ => {
            let ch = s[i..].chars().next().unwrap_or('?');
            return Err(format!("unexpected character {ch:?}"));
        }
    })
}

/// A Go number constant: decimal, `0x`/`0o`/`0b`, a leading-zero octal, or
/// a float (`1.5`, `1e3`), as `text/template` reads them.
fn lex_number(s: &str, i: usize) -> Result<(usize, Token), String> {
    let b = s.as_bytes();
    let mut j = i;
    if matches!(b[j], b'+' | b'-') {
        j += 1;
    }
    let hex = s[j..].starts_with("0x") || s[j..].starts_with("0X");
    while let Some(&c) = b.get(j) {
        let exp_sign = matches!(c, b'+' | b'-') && !hex && matches!(b[j - 1], b'e' | b'E');
        if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || exp_sign {
            j += 1;
        } else {
            break;
        }
    }
    let lit = &s[i..j];
    let bad = || format!("bad number {lit:?}");
    let (neg, digits) = match lit.as_bytes()[0] {
        b'-' => (true, &lit[1..]),
        b'+' => (false, &lit[1..]),
        _ => (false, lit),
    };
    let digits = digits.replace('_', "");
    let radix = |p: &str, r: u32| {
        digits
            .strip_prefix(p)
            .or_else(|| digits.strip_prefix(&p.to_uppercase()))
            .map(|d| i64::from_str_radix(d, r).ok())
    };
    let int = if let Some(v) = radix("0x", 16) {
        v
    } else if let Some(v) = radix("0o", 8) {
        v
    } else if let Some(v) = radix("0b", 2) {
        v
    } else if digits.contains(['.', 'e', 'E']) {
        let f: f64 = digits.parse().map_err(|_| bad())?;
        return Ok((j - i, Token::Float(if neg { -f } else { f })));
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()
    } else {
        digits.parse::<i64>().ok()
    };
    let n = int.ok_or_else(bad)?;
    Ok((j - i, Token::Int(if neg { -n } else { n })))
}

/// Lexes a Go quoted string or character; returns the bytes used and its value.
fn lex_quoted(s: &str, quote: char) -> Result<(usize, String), String> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            c if c == quote => return Ok((i + 1, out)),
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

/// An open block while its body is read.
struct Open {
    kind: BlockKind,
    at: usize,
    branches: Vec<Branch>,
    /// The current branch's head while its body is read; `None` in `else`.
    head: Option<(Act, Pipeline)>,
    otherwise: Option<Act>,
}

fn build(items: Vec<Item>) -> Result<Vec<Node>, String> {
    // Which actions trim the text beside them.
    let trims: Vec<(bool, bool, usize)> = items
        .iter()
        .filter_map(|it| match it {
            Item::Action(r) => Some((r.trim_left, r.trim_right, r.act.id)),
            Item::Text(_) => None,
        })
        .collect();
    let mut stack: Vec<(Open, Vec<Node>)> = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut next_action = 0usize;
    for item in items {
        let raw = match item {
            Item::Text(text) => {
                let prev = next_action.checked_sub(1).map(|i| trims[i]);
                let next = trims.get(next_action);
                nodes.push(Node::Text {
                    text,
                    trim_start: prev.filter(|t| t.1).map(|t| t.2),
                    trim_end: next.filter(|t| t.0).map(|t| t.2),
                });
                continue;
            }
            Item::Action(raw) => raw,
        };
        next_action += 1;
        let at = raw.at;
        let place = |e: String| format!("{e} (in the action starting at character {at})");
        let Some(tokens) = raw.tokens else {
            nodes.push(Node::Comment(raw.act));
            continue;
        };
        let act = raw.act;
        let keyword = match tokens.first() {
            Some(Token::Ident(k)) => k.as_str(),
            _ => "",
        };
        match keyword {
            "if" | "with" | "range" => {
                if stack.len() >= MAX_NESTING {
                    return Err(place(format!("blocks nested more than {MAX_NESTING} deep")));
                }
                let kind = match keyword {
                    "if" => BlockKind::If,
                    "with" => BlockKind::With,
                    _ => BlockKind::Range,
                };
                let pipe = control_pipeline(keyword, &tokens[1..], kind).map_err(place)?;
                let open = Open {
                    kind,
                    at,
                    branches: Vec::new(),
                    head: Some((act, pipe)),
                    otherwise: None,
                };
                stack.push((open, std::mem::take(&mut nodes)));
            }
            "else" => {
                let Some((open, _)) = stack.last_mut() else {
                    return Err(place(
                        "{{else}} without {{if}}, {{with}} or {{range}}".into(),
                    ));
                };
                let Some((head, pipe)) = open.head.take() else {
                    return Err(place(format!(
                        "a second {{{{else}}}} in the {{{{{}}}}} opened at character {}",
                        open.kind.name(),
                        open.at
                    )));
                };
                open.branches.push(Branch {
                    head,
                    pipe,
                    body: std::mem::take(&mut nodes),
                });
                match tokens.get(1) {
                    None => open.otherwise = Some(act),
                    Some(Token::Ident(k))
                        if (k == "if" && open.kind == BlockKind::If)
                            || (k == "with" && open.kind == BlockKind::With) =>
                    {
                        let pipe = control_pipeline(k, &tokens[2..], open.kind).map_err(place)?;
                        open.head = Some((act, pipe));
                    }
                    Some(_) => {
                        return Err(place(format!(
                            "unexpected words after else in {{{{{}}}}}",
                            open.kind.name()
                        )));
                    }
                }
            }
            "end" => {
                if tokens.len() > 1 {
                    return Err(place("unexpected words after end".into()));
                }
                let Some((mut open, parent)) = stack.pop() else {
                    return Err(place(
                        "{{end}} without {{if}}, {{with}} or {{range}}".into(),
                    ));
                };
                let body = std::mem::replace(&mut nodes, parent);
                let otherwise = match (open.head.take(), open.otherwise.take()) {
                    (Some((head, pipe)), _) => {
                        open.branches.push(Branch { head, pipe, body });
                        None
                    }
                    (None, Some(e)) => Some((e, body)),
                    (None, None) => None,
                };
                nodes.push(Node::Block(Box::new(Block {
                    kind: open.kind,
                    branches: open.branches,
                    otherwise,
                    end: act,
                })));
            }
            "break" | "continue" => {
                if tokens.len() > 1 {
                    return Err(place(format!("unexpected words after {keyword}")));
                }
                if !stack.iter().any(|(o, _)| o.kind == BlockKind::Range) {
                    return Err(place(format!("{{{{{keyword}}}}} outside {{{{range}}}}")));
                }
                nodes.push(if keyword == "break" {
                    Node::Break(act)
                } else {
                    Node::Continue(act)
                });
            }
            "define" | "template" | "block" => {
                return Err(place(format!(
                    "{{{{{keyword}}}}} is not supported: a Packer template value is one template"
                )));
            }
            _ => {
                let pipe = pipeline_with_decl(&tokens, false).map_err(place)?;
                nodes.push(Node::Print(act, pipe));
            }
        }
    }
    if let Some((open, _)) = stack.last() {
        return Err(format!(
            "{{{{{}}}}} is not closed: missing {{{{end}}}} (in the action starting at character {})",
            open.kind.name(),
            open.at
        ));
    }
    Ok(nodes)
}

fn control_pipeline(keyword: &str, tokens: &[Token], kind: BlockKind) -> Result<Pipeline, String> {
    if tokens.is_empty() {
        return Err(format!("missing value for {keyword}"));
    }
    pipeline_with_decl(tokens, kind == BlockKind::Range)
}

/// A pipeline with an optional leading declaration; two variables only
/// where `range` allows them.
fn pipeline_with_decl(tokens: &[Token], two_vars: bool) -> Result<Pipeline, String> {
    let mut vars = Vec::new();
    let mut pos = 0;
    let mut decl = None;
    loop {
        match (tokens.get(pos), tokens.get(pos + 1)) {
            (Some(Token::Var(v, f)), Some(Token::Comma)) if f.is_empty() && vars.is_empty() => {
                vars.push(v.clone());
                pos += 2;
            }
            (Some(Token::Var(v, f)), Some(t @ (Token::Declare | Token::Assign)))
                if f.is_empty() =>
            {
                vars.push(v.clone());
                if vars.len() == 2 && !two_vars {
                    return Err("too many declarations".into());
                }
                decl = Some(Decl {
                    vars: std::mem::take(&mut vars),
                    assign: *t == Token::Assign,
                });
                pos += 2;
                break;
            }
            _ if vars.is_empty() => break,
            _ => return Err("expected := or = after the variables".into()),
        }
    }
    let mut p = parse_pipeline(tokens, &mut pos, 0)?;
    if pos != tokens.len() {
        return Err(match tokens[pos] {
            Token::RParen => "unexpected )".into(),
            _ => "unexpected := or , in a pipeline".into(),
        });
    }
    p.decl = decl;
    Ok(p)
}

fn parse_pipeline(tokens: &[Token], pos: &mut usize, depth: usize) -> Result<Pipeline, String> {
    let mut cmds = Vec::new();
    let mut cmd = Vec::new();
    while let Some(tok) = tokens.get(*pos) {
        match tok {
            Token::RParen | Token::Comma | Token::Declare | Token::Assign => break,
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
                cmd.push(Operand::Paren(inner));
            }
            Token::Str(s) => cmd.push(Operand::Str(s.clone())),
            Token::Int(n) => cmd.push(Operand::Int(*n)),
            Token::Float(f) => cmd.push(Operand::Float(*f)),
            Token::Field(f) => cmd.push(Operand::Field(f.clone())),
            Token::Var(v, f) => cmd.push(Operand::Var(v.clone(), f.clone())),
            Token::Ident(id) => cmd.push(match id.as_str() {
                "true" => Operand::Bool(true),
                "false" => Operand::Bool(false),
                "nil" => return Err("nil is not a value a Packer template can use".into()),
                "if" | "else" | "end" | "range" | "with" | "break" | "continue" | "define"
                | "template" | "block" => {
                    return Err(format!("unexpected {id} inside an action"));
                }
                _ => Operand::Ident(id.clone()),
            }),
        }
        *pos += 1;
    }
    if cmd.is_empty() {
        if cmds.is_empty() {
            return Err(if depth > 0 {
                "empty ( )"
            } else {
                "empty action"
            }
            .into());
        }
        return Err("missing command after |".into());
    }
    cmds.push(cmd);
    Ok(Pipeline { decl: None, cmds })
}
