//! Go's `text/template` as Packer templates use it: `{{ }}` actions holding
//! string, number and boolean constants, function calls, pipelines `a | b`,
//! parenthesised sub-pipelines, `.Field` references, variables (`$x := ...`),
//! comments and trim markers; the `if`/`else if`/`else`, `with` and `range`
//! blocks with `break` and `continue`; and Go's built-in functions (`printf`,
//! `eq`, `and`, `len`, ...). Parsing is in `parse`, evaluation in `exec`.
//!
//! Field references are never known at load time, so an action (or a whole
//! block) that needs one is kept verbatim for [`super::render_late`] to fill
//! in later.

use std::fmt;

use super::exec;
use super::parse::{self, Node, Operand, Pipeline};

/// The longest text one string may render to. Real values (a script, a
/// boot command) are kilobytes; without a bound, a few variables that each
/// repeat the previous one twice ask for gigabytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// The error for a value over [`MAX_VALUE_BYTES`]; callers name the place.
pub fn too_long() -> EvalError {
    EvalError::Message(format!(
        "renders to more than {} (the limit for one value)",
        crate::human::exact_bytes(MAX_VALUE_BYTES)
    ))
}

/// A value flowing through a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for Value {
    /// As Go prints it (`%v`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::gofmt::plain(self))
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

/// What an expression can call and reference. Go's built-ins come on top
/// of these functions; a resolver function of the same name wins, as in Go.
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
    /// Accounts for evaluation steps (loop turns, actions) the same way.
    fn charge_steps(&self, _steps: usize) -> Result<(), EvalError> {
        Ok(())
    }
}

/// A parsed template string.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
    actions: usize,
}

impl Template {
    /// Parses `text`; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Template, String> {
        let nodes = parse::parse(text)?;
        // Actions are numbered in order; counting `{{` is an upper bound.
        let actions = text.matches("{{").count();
        Ok(Template { nodes, actions })
    }

    /// Renders with `r`'s functions and fields; an action or block that
    /// refers to an unknown field is kept as written.
    pub fn render(&self, r: &dyn Resolver) -> Result<String, EvalError> {
        exec::execute(&self.nodes, self.actions, r)
    }

    /// The variables named by a literal `user` call (`{{user `a`}}`): what
    /// must be resolved before this text renders. A name computed at render
    /// time is not listed; rendering reports it as unknown.
    pub fn user_refs(&self) -> Vec<String> {
        fn walk(p: &Pipeline, out: &mut Vec<String>) {
            for cmd in &p.cmds {
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
        fn nodes(list: &[Node], out: &mut Vec<String>) {
            for node in list {
                match node {
                    Node::Print(_, p) => walk(p, out),
                    Node::Block(b) => {
                        for br in &b.branches {
                            walk(&br.pipe, out);
                            nodes(&br.body, out);
                        }
                        if let Some((_, body)) = &b.otherwise {
                            nodes(body, out);
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        nodes(&self.nodes, &mut out);
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

    fn e(s: &str) -> String {
        r(s).unwrap_err().to_string()
    }

    #[test]
    fn printf_prints_as_go_does() {
        assert_eq!(r(r#"{{printf "%s-%d" "a" 5}}"#).unwrap(), "a-5");
        assert_eq!(
            r(r#"{{printf "%5.2f|%-4d|%04d|%x|%X|%q|%v|%t|%%" 3.14159 7 42 255 "hi" "a\"b" true false}}"#)
                .unwrap(),
            r#" 3.14|7   |0042|ff|6869|"a\"b"|true|false|%"#
        );
        assert_eq!(
            r(r#"{{printf "%+d|% d|%o|%#x|%b|%c|%q|%U" 5 5 8 255 5 65 97 233}}"#).unwrap(),
            "+5| 5|10|0xff|101|A|'a'|U+00E9"
        );
        assert_eq!(
            r(r#"{{printf "%e %g %v %v %.3g %v" 1234.5678 0.000012 1e6 100000.0 3.14159 -2.50}}"#)
                .unwrap(),
            "1.234568e+03 1.2e-05 1e+06 100000 3.14 -2.5"
        );
        assert_eq!(
            r(r#"{{printf "%6.3s|%-5s|%05d" "abcdef" "ab" -42}}"#).unwrap(),
            "   abc|ab   |-0042"
        );
        assert_eq!(r(r#"{{printf "%[2]s %[1]s" "a" "b"}}"#).unwrap(), "b a");
        assert_eq!(
            r(r#"{{printf "%*d|%.*f" 4 7 1 2.25}}"#).unwrap(),
            "   7|2.2"
        );
        assert_eq!(r(r#"{{printf "% x" "hi"}}"#).unwrap(), "68 69");
        for (format, arg, want) in [
            ("%v", "1e21", "1e+21"),
            ("%g", "100000000.0", "1e+08"),
            ("%.2e", "0.0", "0.00e+00"),
            ("%f", "1", "%!f(int=1)"),
            ("%5t", "true", " true"),
            ("%-5q|", "`a`", "\"a\"  |"),
            ("%x", "-255", "-ff"),
            ("%08.3f", "-3.14159", "-003.142"),
            ("%+.1e", "12345.0", "+1.2e+04"),
            ("%#o", "8", "010"),
            ("%05s", "`ab`", "000ab"),
            ("%.0d", "0", ""),
            ("%6.2f%%", "99.5", " 99.50%"),
            ("%v", "0.000012", "1.2e-05"),
            ("%v", "123456.0", "123456"),
            ("%v", "1234567.0", "1.234567e+06"),
        ] {
            let t = format!("{{{{printf \"{format}\" {arg}}}}}");
            assert_eq!(r(&t).unwrap(), want, "{t}");
        }
        // Go's own marks for mismatches, missing and extra operands.
        assert_eq!(r(r#"{{printf "%d" "x"}}"#).unwrap(), "%!d(string=x)");
        assert_eq!(r(r#"{{printf "%s" 3}}"#).unwrap(), "%!s(int=3)");
        assert_eq!(r(r#"{{printf "%s %s" "a"}}"#).unwrap(), "a %!s(MISSING)");
        assert_eq!(
            r(r#"{{printf "%s" "a" 1 true}}"#).unwrap(),
            "a%!(EXTRA int=1, bool=true)"
        );
        assert_eq!(r(r#"{{printf "%z" 1}}"#).unwrap(), "%!z(int=1)");
        assert_eq!(r(r#"{{printf "x%"}}"#).unwrap(), "x%!(NOVERB)");
        assert_eq!(r(r#"{{printf "%[3]s" "a"}}"#).unwrap(), "%!s(BADINDEX)");
        assert_eq!(
            r(r#"{{printf "%99999999d" 1}}"#).unwrap(),
            "%!(NOVERB)%!(EXTRA int=1)"
        );
        // As an argument and at the end of a pipeline.
        assert_eq!(
            r(r#"{{ 8080 | printf "%s:%d" "10.0.2.2" }}"#).unwrap(),
            "10.0.2.2:8080"
        );
        assert_eq!(r(r#"{{ join (printf "%03d" 7) "x" }}"#).unwrap(), "007+x");
        assert_eq!(
            e("{{printf}}"),
            "wrong number of args for printf: want at least 1 got 0"
        );
        assert_eq!(
            e("{{printf 1}}"),
            "wrong type for value; expected string; got int"
        );
    }

    #[test]
    fn print_println_and_escapers() {
        assert_eq!(r(r#"{{print "a" 1 2 "b" true}}"#).unwrap(), "a1 2btrue");
        assert_eq!(r(r#"{{println "a" 1}}"#).unwrap(), "a 1\n");
        assert_eq!(
            r(r#"{{html "<a href='x'>&"}}"#).unwrap(),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
        assert_eq!(
            r(r#"{{js "it's <b>=\"\n"}}"#).unwrap(),
            r#"it\'s \u003Cb\u003E\u003D\"\u000A"#
        );
        assert_eq!(
            r(r#"{{urlquery "a b&c=d/é"}}"#).unwrap(),
            "a+b%26c%3Dd%2F%C3%A9"
        );
        assert_eq!(r(r#"{{html 1 2}}"#).unwrap(), "1 2");
    }

    #[test]
    fn comparisons_and_logic() {
        assert_eq!(
            r("{{eq 1 2 3 1}} {{eq `a` `b`}} {{ne 1 2}} {{eq true true}}").unwrap(),
            "true false true true"
        );
        assert_eq!(
            r("{{lt 1 2}} {{le 2 2}} {{gt `b` `a`}} {{ge 1 2}} {{lt 1.5 2.5}}").unwrap(),
            "true true true false true"
        );
        assert_eq!(
            e("{{eq 1 `1`}}"),
            "error calling eq: incompatible types for comparison"
        );
        assert_eq!(
            e("{{lt true false}}"),
            "error calling lt: invalid type for comparison"
        );
        assert_eq!(
            e("{{eq 1}}"),
            "error calling eq: missing argument for comparison"
        );
        assert_eq!(
            e("{{ne 1 2 3}}"),
            "wrong number of args for ne: want 2 got 3"
        );
        // `and`/`or` give the deciding argument itself, and stop there.
        assert_eq!(
            r("{{and 1 0 2}}|{{and 1 2}}|{{or 0 `` `x` 3}}|{{or 0 ``}}|").unwrap(),
            "0|2|x||"
        );
        assert_eq!(
            r("{{and false (index `a` 5)}} {{or true (index `a` 5)}}").unwrap(),
            "false true"
        );
        assert_eq!(
            r("{{not ``}} {{not 1}} {{ 0 | not }}").unwrap(),
            "true false true"
        );
        assert_eq!(
            e("{{and}}"),
            "wrong number of args for and: want at least 1 got 0"
        );
        assert_eq!(
            e("{{not 1 2}}"),
            "wrong number of args for not: want 1 got 2"
        );
    }

    #[test]
    fn len_index_slice() {
        assert_eq!(
            r("{{len `héllo`}} {{index `abc` 1}} {{index `abc`}}").unwrap(),
            "6 98 abc"
        );
        assert_eq!(
            r("{{slice `abcdef` 1 3}} {{slice `abc` 1}} {{slice `abc`}}").unwrap(),
            "bc bc abc"
        );
        assert_eq!(e("{{len 3}}"), "error calling len: len of type int");
        assert_eq!(
            e("{{index `abc` 5}}"),
            "error calling index: index out of range: 5"
        );
        assert_eq!(
            e("{{index 3 0}}"),
            "error calling index: can't index item of type int"
        );
        assert_eq!(
            e("{{slice `abc` 2 1}}"),
            "error calling slice: invalid slice index: 2 > 1"
        );
        assert_eq!(
            e("{{slice `abc` 1 2 3}}"),
            "error calling slice: cannot 3-index slice a string"
        );
        assert_eq!(
            e("{{call `f`}}"),
            "call is not supported: a Packer template has no function values"
        );
    }

    #[test]
    fn if_with_range_blocks() {
        assert_eq!(r("{{if eq 1 1}}yes{{else}}no{{end}}").unwrap(), "yes");
        assert_eq!(r("{{if 0}}a{{else if `x`}}b{{else}}c{{end}}").unwrap(), "b");
        assert_eq!(r("{{if 0}}a{{else if ``}}b{{else}}c{{end}}").unwrap(), "c");
        assert_eq!(r("[{{if ``}}a{{end}}]").unwrap(), "[]");
        assert_eq!(r("{{with `v`}}[{{.}}]{{else}}none{{end}}").unwrap(), "[v]");
        assert_eq!(r("{{with ``}}x{{else}}none{{end}}").unwrap(), "none");
        assert_eq!(r("{{with 0}}x{{else with `w`}}{{.}}{{end}}").unwrap(), "w");
        assert_eq!(r("{{range 3}}{{.}},{{end}}").unwrap(), "0,1,2,");
        assert_eq!(
            r("{{range $i := 4}}{{if eq $i 2}}{{break}}{{end}}{{$i}}{{end}}").unwrap(),
            "01"
        );
        assert_eq!(
            r("{{range 4}}{{if eq . 1}}{{continue}}{{end}}{{.}}{{end}}").unwrap(),
            "023"
        );
        assert_eq!(r("{{range 0}}x{{else}}empty{{end}}").unwrap(), "empty");
        assert_eq!(
            r("{{if true}}{{if false}}a{{else}}b{{end}}c{{end}}").unwrap(),
            "bc"
        );
        assert_eq!(e("{{range `ab`}}{{end}}"), "range can't iterate over ab");
        assert_eq!(
            e("{{range $i, $e := 2}}{{end}}"),
            "can't use 2 to iterate over more than one variable"
        );
        assert_eq!(
            e("{{with .Known}}{{.Other}}{{end}}"),
            "can't evaluate field Other in a string value (K)"
        );
    }

    #[test]
    fn variables() {
        assert_eq!(r("{{$x := `a`}}{{$x}}{{$x = `b`}}{{$x}}").unwrap(), "ab");
        assert_eq!(r("{{if $v := `x`}}{{$v}}{{end}}").unwrap(), "x");
        assert_eq!(r("{{$n := 2}}{{range $n}}{{$n}}{{end}}").unwrap(), "22");
        assert_eq!(r("{{$.Known}}").unwrap(), "K");
        assert_eq!(
            e("{{if true}}{{$y := 1}}{{end}}{{$y}}"),
            "undefined variable \"$y\""
        );
        assert_eq!(e("{{$z = 1}}"), "undefined variable \"$z\"");
        assert_eq!(
            e("{{$a, $b := 1}}"),
            "too many declarations (in the action starting at character 1)"
        );
    }

    #[test]
    fn trim_markers_in_blocks() {
        assert_eq!(r("{{if true -}}  \n  x  {{- end}}").unwrap(), "x");
        assert_eq!(r("a {{- if false}}b{{else -}}  c{{end}}").unwrap(), "ac");
        assert_eq!(r("{{range 2 -}}\n  x\n{{- end}}").unwrap(), "xx");
        // Only Go's white space is trimmed.
        assert_eq!(r("\u{a0}{{- 1}}").unwrap(), "\u{a0}1");
    }

    #[test]
    fn blocks_on_late_fields_are_kept_for_later() {
        let kept = |s: &str| assert_eq!(r(s).unwrap(), s);
        kept("{{if .Path}}p={{.Path}}{{end}}");
        kept("{{ if eq .Name `x` }}a{{ else if .Path }}b{{ else }}c{{ end }}");
        kept("a {{- if .X}}b{{end}}");
        kept("{{ $p := .Path }}x{{ $p }}");
        kept("{{range 2}}{{if $.X}}{{break}}{{end}}a{{end}}");
        kept("{{with .Path}}{{.}}{{end}}");
        assert_eq!(
            r("{{if .Path}}{{join `a` `b`}}{{end}}").unwrap(),
            "{{if .Path}}a+b{{end}}"
        );
        assert_eq!(r("{{if true}}{{.Path}}{{end}}").unwrap(), "{{.Path}}");
        assert_eq!(
            r("{{and false .Path}} {{or .Path 1}}").unwrap(),
            "false {{or .Path 1}}"
        );
        // A variable the kept part needs is declared again for the late pass.
        assert_eq!(
            r("{{$x := `a`}}{{.Path}}{{$x}}").unwrap(),
            "{{$x := `a`}}{{.Path}}a"
        );
        assert_eq!(r("{{$x := `a`}}{{$x}}").unwrap(), "a");
    }

    #[test]
    fn block_structure_errors() {
        assert_eq!(
            e("x {{if true}}a"),
            "{{if}} is not closed: missing {{end}} (in the action starting at character 3)"
        );
        assert_eq!(
            e("a{{else}}b"),
            "{{else}} without {{if}}, {{with}} or {{range}} (in the action starting at character 2)"
        );
        assert_eq!(
            e("{{end}}"),
            "{{end}} without {{if}}, {{with}} or {{range}} (in the action starting at character 1)"
        );
        assert_eq!(
            e("{{if 1}}a{{else}}b{{else}}c{{end}}"),
            "a second {{else}} in the {{if}} opened at character 1 (in the action starting at character 19)"
        );
        assert!(e("{{if}}x{{end}}").starts_with("missing value for if"));
        assert!(
            e("{{range 1}}{{else if 1}}{{end}}")
                .starts_with("unexpected words after else in {{range}}")
        );
        assert!(e("{{break}}").starts_with("{{break}} outside {{range}}"));
        assert!(e("{{if 1}}{{continue}}{{end}}").starts_with("{{continue}} outside {{range}}"));
        assert!(e("{{define `x`}}{{end}}").starts_with("{{define}} is not supported"));
        assert!(e("{{end 1}}").starts_with("unexpected words after end"));
        assert!(e("{{ 1 | if }}").starts_with("unexpected if inside an action"));
        // Unknown functions are reported in branches never taken, as Go does.
        assert_eq!(
            e("{{if false}}{{nope}}{{end}}"),
            "function \"nope\" is not defined"
        );
        let deep = format!("{}x{}", "{{if 1}}".repeat(70), "{{end}}".repeat(70));
        assert!(e(&deep).starts_with("blocks nested more than 64 deep"));
    }

    #[test]
    fn loops_stay_within_the_limits() {
        assert!(e("{{range 1000000}}{{end}}").contains("steps to render"));
        assert!(e("{{range 1000}}{{range 1000}}{{end}}{{end}}").contains("steps to render"));
        assert!(e(r#"{{range 20000}}{{printf "%100s" ""}}{{end}}"#).contains("more than 1 MiB"));
        assert!(
            e("{{range 30000}}0123456789012345678901234567890123456789{{end}}")
                .contains("more than 1 MiB")
        );
        assert!(e(r#"{{printf "%2000000d" 1}}"#).contains("more than 1 MiB"));
        assert_eq!(r("{{range 1000}}{{end}}").unwrap(), "");
    }

    #[test]
    fn numbers_and_characters() {
        assert_eq!(
            r("{{0x1F}} {{0o17}} {{017}} {{0b101}} {{1_000}} {{'a'}} {{1.5}} {{1e3}} {{-2.5}}")
                .unwrap(),
            "31 15 15 5 1000 97 1.5 1000 -2.5"
        );
        assert!(e("{{ 0x }}").contains("bad number"));
    }
}
