//! Late rendering: the `{{ }}` references a template leaves for the build
//! to fill (`{{ .Vars }}`, `{{ .Path }}`, `{{ .SSHHostPort }}`, ...), and the
//! Go-template engine and functions that both the template loader and the
//! stages use.

mod builtins;
pub(crate) mod engine;
mod exec;
pub(crate) mod funcs;
mod gofmt;
mod parse;

use engine::{EvalError, Resolver, Value};
use funcs::FuncCtx;

/// The only Packer functions [`render_late`] evaluates: pure ones. Go's
/// built-ins (`printf`, `eq`, `if` blocks, ...) work there too.
const LATE_FUNCTIONS: &[&str] = &[
    "lower",
    "upper",
    "split",
    "replace",
    "replace_all",
    "clean_resource_name",
];

/// The late values Packer passes as numbers: `printf "%d"` and `eq` with
/// a number treat them as Packer does.
const INT_FIELDS: &[&str] = &["HTTPPort", "SSHHostPort"];

struct LateResolver<'a> {
    values: &'a [(&'a str, &'a str)],
    funcs: FuncCtx,
}

impl Resolver for LateResolver<'_> {
    fn is_function(&self, name: &str) -> bool {
        LATE_FUNCTIONS.contains(&name)
    }

    fn call(&self, name: &str, args: &[Value]) -> Result<Value, EvalError> {
        self.funcs.call(name, args)
    }

    fn field(&self, name: &str) -> Option<Value> {
        self.values
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(k, v)| match v.parse::<i64>() {
                Ok(n) if INT_FIELDS.contains(k) => Value::Int(n),
                _ => Value::Str((*v).to_string()),
            })
    }
}

/// Fills the late references (`{{ .Vars }}`, `{{ .Path }}`,
/// `{{.SSHHostPort}}`, ...) that `template::load` left in a
/// string, with the blocks it kept because they depend on them
/// (`{{ if .HTTPIP }}...{{ end }}`). Unknown late references are left as
/// they are; so is the whole text if it cannot be rendered.
pub fn render_late(text: &str, values: &[(&str, &str)]) -> String {
    if !text.contains("{{") {
        return text.to_string();
    }
    let r = LateResolver {
        values,
        funcs: FuncCtx {
            env_allowed: false,
            vars: Default::default(),
            failed_vars: Default::default(),
            build_name: None,
            build_type: None,
            template_dir: String::new(),
            pwd: String::new(),
            now: chrono::Utc::now(),
            budget: Default::default(),
        },
    };
    engine::render(text, &r).unwrap_or_else(|_| text.to_string())
}
