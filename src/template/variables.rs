//! User variables: declarations, `-var`/`-var-file` values, and defaults that
//! refer to other variables or the environment.
//!
//! Packer's legacy semantics: values given on the command line win over
//! defaults; every value, given or default, is rendered with `env` and `user`
//! allowed, in any order of declaration; a variable declared `null` must be
//! set. Setting an undeclared variable is accepted silently, as Packer does,
//! and it is visible to `user`.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value as Json;

use super::decode::{Cx, json_type, key_name};
use crate::plan::VariableInfo;
use crate::plan::render::engine::{EvalError, Template};

/// A declared variable, in template order.
struct Declared {
    name: String,
    /// `None`: declared `null`, required.
    default: Option<String>,
}

/// The variables once resolved.
pub struct Resolved {
    /// Every variable, for `kiln inspect`.
    pub infos: Vec<VariableInfo>,
    /// The values of the sensitive ones, to mask in every output.
    pub sensitive_values: Vec<String>,
}

/// `overrides` are the var-file values in order, then `-var` values in order:
/// later ones win.
pub fn resolve(
    cx: &mut Cx,
    variables: Option<&Json>,
    sensitive: Option<&Json>,
    overrides: &[(String, String)],
) -> Resolved {
    let declared = declarations(cx, variables);
    // Every value is rendered, command-line ones included, as Packer does:
    // `-var 'home={{env `HOME`}}'` works there too.
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    for d in &declared {
        if let Some(default) = &d.default {
            texts.insert(d.name.clone(), default.clone());
        }
    }
    for (k, v) in overrides {
        texts.insert(k.clone(), v.clone());
    }
    for d in &declared {
        if d.default.is_none() && !texts.contains_key(&d.name) {
            cx.funcs.failed_vars.insert(d.name.clone());
            cx.problem(
                format!("variables.{}", key_name(&d.name)),
                "required variable not set: give it with -var or -var-file",
            );
        }
    }
    let declared_names: HashSet<&str> = declared.iter().map(|d| d.name.as_str()).collect();
    let path_of = |name: &str| {
        if declared_names.contains(name) {
            format!("variables.{}", key_name(name))
        } else {
            format!("-var {name}")
        }
    };

    cx.funcs.env_allowed = true;
    resolve_in_order(cx, &texts, &path_of);
    cx.funcs.env_allowed = false;
    let values = cx.funcs.vars.clone();

    // In the order the template lists them: the values come out the same
    // way every time.
    let sensitive_in_order = sensitive_names(cx, sensitive, &declared_names);
    let sensitive_names: HashSet<String> = sensitive_in_order.iter().cloned().collect();
    // Every value a sensitive name has, whatever else is wrong: set but not
    // declared, or its text failed to render (the text as given is then
    // the best guess of the secret, and an error may quote it).
    let mut sensitive_values = Vec::new();
    let mut seen_values = HashSet::new();
    for name in &sensitive_in_order {
        let value = values.get(name).or_else(|| texts.get(name));
        if let Some(value) = value
            && !value.is_empty()
            && seen_values.insert(value.clone())
        {
            sensitive_values.push(value.clone());
        }
    }
    let mut infos = Vec::new();
    for d in &declared {
        let value = values.get(&d.name).cloned().unwrap_or_default();
        let is_sensitive = sensitive_names.contains(&d.name);
        infos.push(VariableInfo {
            name: d.name.clone(),
            value,
            sensitive: is_sensitive,
            required: d.default.is_none(),
        });
    }
    Resolved {
        infos,
        sensitive_values,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    /// On the stack: its dependencies are being resolved.
    Active,
    Done,
    Failed,
}

struct Frame<'t> {
    name: &'t str,
    /// The variables it names, then any its rendering asked for.
    deps: Vec<String>,
    next: usize,
}

/// Renders every value into `cx.funcs.vars`, each after the variables it
/// names (values may refer to variables declared after them). A depth-first
/// walk with an explicit stack: every value is parsed once and, unless it
/// computes a variable's name at render time, rendered once, so a long
/// chain costs no more than as many independent values; a cycle is found
/// when the walk meets a variable already on its stack, and named whole.
fn resolve_in_order(
    cx: &mut Cx,
    texts: &BTreeMap<String, String>,
    path_of: &dyn Fn(&str) -> String,
) {
    let mut state: HashMap<&str, State> =
        texts.keys().map(|k| (k.as_str(), State::Pending)).collect();
    let mut parsed: HashMap<&str, Template> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    for root in texts.keys() {
        if state.get(root.as_str()) != Some(&State::Pending) {
            continue;
        }
        start(
            cx,
            texts,
            &mut state,
            &mut parsed,
            &mut stack,
            root,
            path_of,
        );
        while let Some(frame) = stack.last_mut() {
            if let Some(dep) = frame.deps.get(frame.next) {
                frame.next += 1;
                match state.get_key_value(dep.as_str()) {
                    Some((&dep, State::Pending)) => {
                        start(cx, texts, &mut state, &mut parsed, &mut stack, dep, path_of);
                    }
                    Some((&dep, State::Active)) => cycle(cx, &mut state, &mut stack, dep, path_of),
                    // Resolved, failed, or not a variable at all: the
                    // rendering says which.
                    _ => {}
                }
                continue;
            }
            let name = frame.name;
            let Some(template) = parsed.get(name) else {
                stack.pop();
                continue;
            };
            match template.render(&cx.funcs) {
                Ok(value) => {
                    cx.funcs.vars.insert(name.to_string(), value);
                    state.insert(name, State::Done);
                    stack.pop();
                }
                Err(EvalError::UnknownVariable(v)) => match state.get(v.as_str()) {
                    // A name computed while rendering: resolve it, then
                    // render this one again.
                    Some(State::Pending | State::Active) => frame.deps.push(v),
                    _ => {
                        cx.problem(
                            path_of(name),
                            format!("refers to variable {v:?}, which is not declared or not set"),
                        );
                        fail(cx, &mut state, name);
                        stack.pop();
                    }
                },
                Err(EvalError::AlreadyReported) => {
                    fail(cx, &mut state, name);
                    stack.pop();
                }
                Err(e) => {
                    cx.problem(path_of(name), e.to_string());
                    fail(cx, &mut state, name);
                    stack.pop();
                }
            }
        }
    }
}

/// Puts `name` on the stack with the variables its text names, or reports
/// why its text cannot be parsed.
fn start<'t>(
    cx: &mut Cx,
    texts: &'t BTreeMap<String, String>,
    state: &mut HashMap<&'t str, State>,
    parsed: &mut HashMap<&'t str, Template>,
    stack: &mut Vec<Frame<'t>>,
    name: &'t str,
    path_of: &dyn Fn(&str) -> String,
) {
    let Some(text) = texts.get(name) else {
        return;
    };
    match Template::parse(text) {
        Ok(template) => {
            let deps = template.user_refs();
            parsed.insert(name, template);
            state.insert(name, State::Active);
            stack.push(Frame {
                name,
                deps,
                next: 0,
            });
        }
        Err(e) => {
            cx.problem(path_of(name), e);
            fail(cx, state, name);
        }
    }
}

/// `dep` is on the stack already: everything above it is a cycle. Each of
/// them fails; whatever waits on them fails quietly when it renders.
fn cycle(
    cx: &mut Cx,
    state: &mut HashMap<&str, State>,
    stack: &mut Vec<Frame>,
    dep: &str,
    path_of: &dyn Fn(&str) -> String,
) {
    let Some(at) = stack.iter().position(|f| f.name == dep) else {
        return;
    };
    let members: Vec<&str> = stack[at..].iter().map(|f| f.name).collect();
    // A long cycle is named by its ends.
    const SHOWN: usize = 8;
    let mut names: Vec<String> = members.iter().take(SHOWN).map(|n| n.to_string()).collect();
    if members.len() > SHOWN {
        names.push(format!("... ({} more)", members.len() - SHOWN));
    }
    names.push(dep.to_string());
    cx.problem(
        path_of(dep),
        format!("is part of a cycle of variables: {}", names.join(" -> ")),
    );
    for name in members {
        fail(cx, state, name);
    }
    stack.truncate(at);
}

fn fail(cx: &mut Cx, state: &mut HashMap<&str, State>, name: &str) {
    cx.funcs.failed_vars.insert(name.to_string());
    if let Some(s) = state.get_mut(name) {
        *s = State::Failed;
    }
}

fn declarations(cx: &Cx, variables: Option<&Json>) -> Vec<Declared> {
    let Some(v) = variables else {
        return Vec::new();
    };
    let Json::Object(map) = v else {
        cx.problem(
            "variables",
            format!("expected an object, got {}", json_type(v)),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, value) in map {
        let default = match value {
            Json::Null => None,
            Json::String(s) => Some(s.clone()),
            // Packer decodes defaults weakly into strings.
            Json::Number(n) => Some(n.to_string()),
            Json::Bool(b) => Some(b.to_string()),
            other => {
                cx.problem(
                    format!("variables.{}", key_name(name)),
                    format!(
                        "expected a string (or null for a required variable), got {}",
                        json_type(other)
                    ),
                );
                continue;
            }
        };
        out.push(Declared {
            name: name.clone(),
            default,
        });
    }
    out
}

fn sensitive_names(cx: &Cx, sensitive: Option<&Json>, declared: &HashSet<&str>) -> Vec<String> {
    let Some(v) = sensitive else {
        return Vec::new();
    };
    let Json::Array(items) = v else {
        cx.problem(
            "sensitive-variables",
            format!("expected an array of variable names, got {}", json_type(v)),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("sensitive-variables[{i}]");
        match item {
            Json::String(name) if declared.contains(name.as_str()) => out.push(name.clone()),
            Json::String(name) => {
                cx.problem(
                    path,
                    format!("variable {name:?} is marked sensitive but not declared in variables"),
                );
                // Still masked: a -var may have set it.
                out.push(name.clone());
            }
            other => cx.problem(
                path,
                format!("expected a variable name, got {}", json_type(other)),
            ),
        }
    }
    out
}
