//! The evaluator: walks a parsed template, running blocks and loops the way
//! Go's `text/template` does. Whatever depends on a value only known later
//! (a `.Field` at load time) is kept as written, blocks included, for the
//! late pass to finish.

use super::builtins::{self, BUILTINS, truth};
use super::engine::{EvalError, MAX_VALUE_BYTES, Resolver, Value, too_long};
use super::gofmt;
use super::parse::{Act, Block, BlockKind, Decl, Node, Operand, Pipeline};

/// The most steps (actions, text pieces and loop turns) one string may
/// take: a loop bounds its own output only when it prints something.
pub(super) const MAX_STEPS: usize = 100_000;

enum Piece<'a> {
    Text {
        text: &'a str,
        trim_start: Option<usize>,
        trim_end: Option<usize>,
    },
    Out(String),
    /// An action kept as written.
    Kept(usize, &'a str),
    /// A variable declaration that ran: written back only when something
    /// else is kept, for the late pass to see the variable.
    Decl(usize, &'a str),
}

/// What `.` is.
#[derive(Clone)]
enum Dot {
    /// The data: fields come from the resolver.
    Root,
    Value(Value),
    /// Inside a block kept for later: nothing is known about it.
    Unknown,
}

#[derive(PartialEq, Eq)]
enum Flow {
    Normal,
    Break,
    Continue,
    /// A kept block holds a `break`/`continue`: the loop around it must be
    /// kept too.
    Unknown,
}

struct Exec<'a> {
    r: &'a dyn Resolver,
    pieces: Vec<Piece<'a>>,
    /// Variables in scope, innermost last; `None` for a value known later.
    vars: Vec<(String, Option<Value>)>,
    steps: usize,
    size: usize,
    loops: usize,
}

/// Renders `nodes`, numbered with `actions` actions, with `r`.
pub(super) fn execute(
    nodes: &[Node],
    actions: usize,
    r: &dyn Resolver,
) -> Result<String, EvalError> {
    check_functions(nodes, r)?;
    let mut ex = Exec {
        r,
        pieces: Vec::new(),
        vars: Vec::new(),
        steps: 0,
        size: 0,
        loops: 0,
    };
    ex.walk(nodes, &Dot::Root, false)?;
    Ok(ex.join(actions))
}

fn for_each_pipeline<'a>(
    nodes: &'a [Node],
    f: &mut dyn FnMut(&'a Pipeline) -> Result<(), EvalError>,
) -> Result<(), EvalError> {
    for node in nodes {
        match node {
            Node::Print(_, p) => f(p)?,
            Node::Block(b) => {
                for br in &b.branches {
                    f(&br.pipe)?;
                    for_each_pipeline(&br.body, f)?;
                }
                if let Some((_, body)) = &b.otherwise {
                    for_each_pipeline(body, f)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Every function named anywhere must exist, as Go checks when it parses:
/// an unknown one is reported even in a branch not taken or beside a late
/// reference.
fn check_functions(nodes: &[Node], r: &dyn Resolver) -> Result<(), EvalError> {
    fn check(p: &Pipeline, r: &dyn Resolver) -> Result<(), EvalError> {
        for op in p.cmds.iter().flatten() {
            match op {
                Operand::Ident(name)
                    if !r.is_function(name) && !BUILTINS.contains(&name.as_str()) =>
                {
                    let why = NOT_HERE
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, why)| format!(": {why}"))
                        .unwrap_or_default();
                    return Err(EvalError::Message(format!(
                        "function {name:?} is not defined{why}"
                    )));
                }
                Operand::Paren(inner) => check(inner, r)?,
                _ => {}
            }
        }
        Ok(())
    }
    for_each_pipeline(nodes, &mut |p| check(p, r))
}

/// Functions people reach for that Packer 1.6's JSON templates do not
/// have, or kiln does not have yet, with what to do instead.
const NOT_HERE: &[(&str, &str)] = &[
    (
        "join",
        "Packer's JSON templates have no join (HCL2 templates do); write the text out, or build it with printf",
    ),
    (
        "strftime",
        "strftime came with Packer 1.7; use isotime with a Go layout (isotime \"2006-01-02\")",
    ),
    (
        "build",
        "kiln does not provide the build function's connection data yet; \
         use the provisioner's environment_vars or the template's variables",
    ),
    (
        "template_file",
        "Packer's JSON templates have no template_file (HCL2 templates have templatefile)",
    ),
];

/// Whether a `break`/`continue` in `nodes` belongs to a loop outside them.
fn has_loop_control(nodes: &[Node]) -> bool {
    nodes.iter().any(|n| match n {
        Node::Break(_) | Node::Continue(_) => true,
        Node::Block(b) if b.kind != BlockKind::Range => {
            b.branches.iter().any(|br| has_loop_control(&br.body))
                || b.otherwise
                    .as_ref()
                    .is_some_and(|(_, body)| has_loop_control(body))
        }
        _ => false,
    })
}

fn is_white(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

impl<'a> Exec<'a> {
    fn step(&mut self) -> Result<(), EvalError> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(EvalError::Message(format!(
                "takes more than {MAX_STEPS} steps to render (the limit for one value; a loop that runs too long?)"
            )));
        }
        if self.steps.is_multiple_of(1024) {
            self.r.charge_steps(1024)?;
        }
        Ok(())
    }

    /// Accounts for output that actions or loops add.
    fn grow(&mut self, bytes: usize) -> Result<(), EvalError> {
        self.size = self.size.saturating_add(bytes);
        if self.size > MAX_VALUE_BYTES {
            return Err(too_long());
        }
        self.r.charge(bytes)
    }

    fn walk(&mut self, nodes: &'a [Node], dot: &Dot, keep: bool) -> Result<Flow, EvalError> {
        for node in nodes {
            self.step()?;
            match node {
                Node::Text {
                    text,
                    trim_start,
                    trim_end,
                } => {
                    self.pieces.push(Piece::Text {
                        text,
                        trim_start: *trim_start,
                        trim_end: *trim_end,
                    });
                    // Text outside loops is bounded by the input.
                    if self.loops > 0 {
                        self.grow(text.len())?;
                    } else {
                        self.size = self.size.saturating_add(text.len());
                    }
                }
                Node::Comment(_) => {}
                Node::Print(act, pipe) => self.print(act, pipe, dot, keep)?,
                Node::Block(b) => {
                    if keep {
                        // Whatever it holds runs later, loop controls included.
                        self.keep_block(b, dot)?;
                    } else {
                        let flow = self.block(b, dot)?;
                        if flow != Flow::Normal {
                            return Ok(flow);
                        }
                    }
                }
                Node::Break(act) | Node::Continue(act) if keep => self.kept(act)?,
                Node::Break(_) => return Ok(Flow::Break),
                Node::Continue(_) => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn kept(&mut self, act: &'a Act) -> Result<(), EvalError> {
        self.pieces.push(Piece::Kept(act.id, &act.src));
        self.grow(act.src.len())
    }

    fn print(
        &mut self,
        act: &'a Act,
        pipe: &'a Pipeline,
        dot: &Dot,
        keep: bool,
    ) -> Result<(), EvalError> {
        if keep && let Some(decl) = &pipe.decl {
            self.bind(decl, &[None])?;
            return self.kept(act);
        }
        let value = self.eval_pipeline(pipe, dot)?;
        if let Some(decl) = &pipe.decl {
            let known = value.is_some();
            self.bind(decl, &[value])?;
            if known {
                self.pieces.push(Piece::Decl(act.id, &act.src));
                return Ok(());
            }
            return self.kept(act);
        }
        match value {
            Some(v) => {
                let s = gofmt::plain(&v);
                self.grow(s.len())?;
                self.pieces.push(Piece::Out(s));
                Ok(())
            }
            None => self.kept(act),
        }
    }

    /// Declares or assigns `decl`'s variables (`values[i]`, or the last).
    fn bind(&mut self, decl: &Decl, values: &[Option<Value>]) -> Result<(), EvalError> {
        for (i, name) in decl.vars.iter().enumerate() {
            let v = values.get(i).or(values.last()).cloned().flatten();
            if decl.assign {
                let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) else {
                    return Err(EvalError::Message(format!(
                        "undefined variable \"${name}\""
                    )));
                };
                slot.1 = v;
            } else {
                self.vars.push((name.clone(), v));
            }
        }
        Ok(())
    }

    fn block(&mut self, b: &'a Block, dot: &Dot) -> Result<Flow, EvalError> {
        let vars = self.vars.len();
        let pieces = self.pieces.len();
        let flow = match b.kind {
            BlockKind::If | BlockKind::With => self.if_with(b, dot)?,
            BlockKind::Range => self.range(b, dot)?,
        };
        self.vars.truncate(vars);
        match flow {
            // A kept `break`/`continue` under a loop that ran: keep the loop.
            None => {
                self.pieces.truncate(pieces);
                self.keep_block(b, dot)
            }
            Some(Flow::Unknown) if b.kind == BlockKind::Range => {
                self.pieces.truncate(pieces);
                self.keep_block(b, dot)
            }
            Some(f) => Ok(f),
        }
    }

    /// `None`: a condition is only known later; keep the whole block.
    fn if_with(&mut self, b: &'a Block, dot: &Dot) -> Result<Option<Flow>, EvalError> {
        for br in &b.branches {
            let Some(v) = self.eval_pipeline(&br.pipe, dot)? else {
                return Ok(None);
            };
            if let Some(decl) = &br.pipe.decl {
                self.bind(decl, &[Some(v.clone())])?;
            }
            if truth(&v) {
                let inner = match b.kind {
                    BlockKind::With => Dot::Value(v),
                    _ => dot.clone(),
                };
                return self.walk(&br.body, &inner, false).map(Some);
            }
        }
        match &b.otherwise {
            Some((_, body)) => self.walk(body, dot, false).map(Some),
            None => Ok(Some(Flow::Normal)),
        }
    }

    fn range(&mut self, b: &'a Block, dot: &Dot) -> Result<Option<Flow>, EvalError> {
        let br = &b.branches[0];
        let Some(v) = self.eval_pipeline(&br.pipe, dot)? else {
            return Ok(None);
        };
        // Go (1.22 on) ranges over an integer n as 0..n; a Packer
        // template has no lists or maps to range over.
        let Value::Int(n) = v else {
            return Err(EvalError::Message(format!(
                "range can't iterate over {}",
                gofmt::plain(&v)
            )));
        };
        if let Some(decl) = &br.pipe.decl
            && decl.vars.len() > 1
        {
            return Err(EvalError::Message(format!(
                "can't use {n} to iterate over more than one variable"
            )));
        }
        if n <= 0 {
            return match &b.otherwise {
                Some((_, body)) => self.walk(body, dot, false).map(Some),
                None => Ok(Some(Flow::Normal)),
            };
        }
        self.loops += 1;
        let mut result = Flow::Normal;
        for i in 0..n {
            self.step()?;
            let vars = self.vars.len();
            if let Some(decl) = &br.pipe.decl {
                self.bind(decl, &[Some(Value::Int(i))])?;
            }
            let flow = self.walk(&br.body, &Dot::Value(Value::Int(i)), false)?;
            self.vars.truncate(vars);
            match flow {
                Flow::Break => break,
                Flow::Unknown => {
                    result = Flow::Unknown;
                    break;
                }
                Flow::Normal | Flow::Continue => {}
            }
        }
        self.loops -= 1;
        Ok(Some(result))
    }

    /// Writes a block as it is, with what can be evaluated inside it
    /// evaluated, for the late pass.
    fn keep_block(&mut self, b: &'a Block, dot: &Dot) -> Result<Flow, EvalError> {
        let vars = self.vars.len();
        for br in &b.branches {
            self.kept(&br.head)?;
            if let Some(decl) = &br.pipe.decl {
                self.bind(decl, &[None])?;
            }
            let inner = match b.kind {
                BlockKind::If => dot.clone(),
                _ => Dot::Unknown,
            };
            self.walk(&br.body, &inner, true)?;
        }
        if let Some((act, body)) = &b.otherwise {
            self.kept(act)?;
            self.walk(body, dot, true)?;
        }
        self.kept(&b.end)?;
        self.vars.truncate(vars);
        let inner_control = b.kind != BlockKind::Range
            && (b.branches.iter().any(|br| has_loop_control(&br.body))
                || b.otherwise
                    .as_ref()
                    .is_some_and(|(_, body)| has_loop_control(body)));
        Ok(if inner_control {
            Flow::Unknown
        } else {
            Flow::Normal
        })
    }

    fn eval_pipeline(&mut self, p: &Pipeline, dot: &Dot) -> Result<Option<Value>, EvalError> {
        let mut piped: Option<Value> = None;
        for cmd in &p.cmds {
            match self.eval_command(cmd, piped.take(), dot)? {
                Some(v) => piped = Some(v),
                None => return Ok(None),
            }
        }
        Ok(piped)
    }

    fn eval_command(
        &mut self,
        cmd: &[Operand],
        piped: Option<Value>,
        dot: &Dot,
    ) -> Result<Option<Value>, EvalError> {
        let Some((first, rest)) = cmd.split_first() else {
            return Err(EvalError::Message("empty command".into()));
        };
        let Operand::Ident(name) = first else {
            if !rest.is_empty() || piped.is_some() {
                return Err(EvalError::Message(
                    "cannot give arguments to a value that is not a function".into(),
                ));
            }
            return self.eval_operand(first, dot);
        };
        if !self.r.is_function(name) && (name == "and" || name == "or") {
            return self.and_or(name, rest, piped, dot);
        }
        let mut args = Vec::with_capacity(rest.len() + 1);
        for op in rest {
            match self.eval_operand(op, dot)? {
                Some(v) => args.push(v),
                None => return Ok(None),
            }
        }
        args.extend(piped);
        if self.r.is_function(name) {
            return self.r.call(name, &args).map(Some);
        }
        let v = builtins::call(name, &args)?;
        if let Value::Str(s) = &v {
            if s.len() > MAX_VALUE_BYTES {
                return Err(too_long());
            }
            self.r.charge(s.len())?;
        }
        Ok(Some(v))
    }

    /// Go's `and`/`or`: the first argument that decides, or the last;
    /// later arguments are not evaluated.
    fn and_or(
        &mut self,
        name: &str,
        rest: &[Operand],
        piped: Option<Value>,
        dot: &Dot,
    ) -> Result<Option<Value>, EvalError> {
        let count = rest.len() + usize::from(piped.is_some());
        if count == 0 {
            return Err(EvalError::Message(format!(
                "wrong number of args for {name}: want at least 1 got 0"
            )));
        }
        let decides = |v: &Value| truth(v) == (name == "or");
        let mut last = None;
        for op in rest {
            let Some(v) = self.eval_operand(op, dot)? else {
                return Ok(None);
            };
            if decides(&v) {
                return Ok(Some(v));
            }
            last = Some(v);
        }
        Ok(piped.or(last))
    }

    fn eval_operand(&mut self, op: &Operand, dot: &Dot) -> Result<Option<Value>, EvalError> {
        Ok(match op {
            Operand::Str(s) => Some(Value::Str(s.clone())),
            Operand::Int(i) => Some(Value::Int(*i)),
            Operand::Float(f) => Some(Value::Float(*f)),
            Operand::Bool(b) => Some(Value::Bool(*b)),
            Operand::Field(f) => self.field(dot, f)?,
            Operand::Var(name, field) if name.is_empty() => {
                // `$` is the data itself.
                self.field(&Dot::Root, field)?
            }
            Operand::Var(name, field) => {
                let Some((_, v)) = self.vars.iter().rev().find(|(n, _)| n == name) else {
                    return Err(EvalError::Message(format!(
                        "undefined variable \"${name}\""
                    )));
                };
                match v.clone() {
                    Some(v) => self.field(&Dot::Value(v), field)?,
                    None => None,
                }
            }
            // A bare identifier as an argument is a call without arguments, as in Go.
            Operand::Ident(_) => self.eval_command(std::slice::from_ref(op), None, dot)?,
            Operand::Paren(p) => self.eval_pipeline(p, dot)?,
        })
    }

    fn field(&self, dot: &Dot, name: &str) -> Result<Option<Value>, EvalError> {
        match dot {
            Dot::Root => Ok(self.r.field(name)),
            Dot::Unknown => Ok(None),
            Dot::Value(v) if name.is_empty() => Ok(Some(v.clone())),
            Dot::Value(v) => Err(EvalError::Message(format!(
                "can't evaluate field {name} in a {} value ({})",
                match v {
                    Value::Str(_) => "string",
                    Value::Int(_) => "int",
                    Value::Bool(_) => "bool",
                    Value::Float(_) => "float64",
                },
                gofmt::plain(v)
            ))),
        }
    }

    /// The output: pieces joined, with the text beside a trim marker
    /// trimmed unless that action was kept (the late pass trims then).
    fn join(self, actions: usize) -> String {
        let any_kept = self.pieces.iter().any(|p| matches!(p, Piece::Kept(..)));
        let mut kept = vec![false; actions];
        for p in &self.pieces {
            match p {
                Piece::Kept(id, _) => kept[*id] = true,
                Piece::Decl(id, _) if any_kept => kept[*id] = true,
                _ => {}
            }
        }
        let trims = |id: &Option<usize>| id.is_some_and(|id| !kept[id]);
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text {
                    text,
                    trim_start,
                    trim_end,
                } => {
                    let mut t: &str = text;
                    if trims(trim_start) {
                        t = t.trim_start_matches(is_white);
                    }
                    if trims(trim_end) {
                        t = t.trim_end_matches(is_white);
                    }
                    out.push_str(t);
                }
                Piece::Out(s) => out.push_str(s),
                Piece::Kept(_, src) => out.push_str(src),
                Piece::Decl(_, src) if any_kept => out.push_str(src),
                Piece::Decl(..) => {}
            }
        }
        out
    }
}
