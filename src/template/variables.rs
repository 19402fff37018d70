//! User variables: declarations, `-var`/`-var-file` values, and defaults that
//! refer to other variables or the environment.
//!
//! Packer's legacy semantics: values given on the command line win over
//! defaults; every value, given or default, is rendered with `env` and `user`
//! allowed, in any order of declaration; a variable declared `null` must be
//! set. Setting an undeclared variable is accepted silently, as Packer does,
//! and it is visible to `user`.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::decode::{Cx, json_type};
use super::interpolate::{EvalError, render};
use super::model::VariableInfo;

/// A declared variable, in template order.
struct Declared {
    name: String,
    /// `None`: declared `null`, required.
    default: Option<String>,
}

pub struct Resolved {
    pub infos: Vec<VariableInfo>,
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
                format!("variables.{}", d.name),
                "required variable not set: give it with -var or -var-file",
            );
        }
    }
    let path_of = |name: &str| {
        if declared.iter().any(|d| d.name == name) {
            format!("variables.{name}")
        } else {
            format!("-var {name}")
        }
    };

    // Values may refer to variables declared after them: render until
    // nothing more resolves.
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut pending: Vec<(&String, &String)> = texts.iter().collect();
    cx.funcs.env_allowed = true;
    loop {
        let mut progressed = false;
        let mut still = Vec::new();
        for (name, text) in pending {
            cx.funcs.vars = values.clone();
            match render(text, &cx.funcs) {
                Ok(v) => {
                    values.insert(name.clone(), v);
                    progressed = true;
                }
                Err(EvalError::UnknownVariable(_)) => still.push((name, text)),
                Err(EvalError::AlreadyReported) => {
                    cx.funcs.failed_vars.insert(name.clone());
                }
                Err(e) => {
                    cx.funcs.failed_vars.insert(name.clone());
                    cx.problem(path_of(name), e.to_string());
                }
            }
        }
        pending = still;
        if !progressed || pending.is_empty() {
            break;
        }
    }
    cx.funcs.vars = values.clone();
    let unresolved: Vec<String> = pending.iter().map(|(n, _)| (*n).clone()).collect();
    for (name, text) in pending {
        if let Err(EvalError::UnknownVariable(v)) = render(text, &cx.funcs) {
            cx.problem(
                path_of(name),
                format!(
                    "refers to variable {v:?}, which is not declared, not set, or part of a cycle"
                ),
            );
        }
    }
    cx.funcs.failed_vars.extend(unresolved);
    cx.funcs.env_allowed = false;
    cx.funcs.vars = values.clone();

    let sensitive_names = sensitive_names(cx, sensitive, &declared);
    // Every value a sensitive name has, whatever else is wrong: set but not
    // declared, or its text failed to render (the text as given is then
    // the best guess of the secret, and an error may quote it).
    let mut sensitive_values = Vec::new();
    for name in &sensitive_names {
        let value = values.get(name).or_else(|| texts.get(name));
        if let Some(value) = value
            && !value.is_empty()
            && !sensitive_values.contains(value)
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
                    format!("variables.{name}"),
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

fn sensitive_names(cx: &Cx, sensitive: Option<&Json>, declared: &[Declared]) -> Vec<String> {
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
            Json::String(name) if declared.iter().any(|d| &d.name == name) => {
                out.push(name.clone())
            }
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
