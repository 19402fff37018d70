//! Generated templates, valid and broken, through the whole loader and the
//! `{{ }}` engine: whatever the input, an answer (never a panic), bounded
//! output, and every error naming its place with the input escaped. A fixed
//! seed and count keep `cargo test` repeatable; `fuzz/` runs the same checks
//! for as long as one likes (see the README).

use std::path::Path;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value as Json, json};

use super::{Overrides, TemplateError, load_bytes};
use crate::plan::render::engine::{self as interpolate, MAX_VALUE_BYTES};
use crate::plan::render::funcs::{FUNCTIONS, FuncCtx, MAX_TOTAL_BYTES};

const SEED: u64 = 0x6b69_6c6e;
const STRUCTURED: usize = 1500;
const MUTATED: usize = 1500;
const EXPRESSIONS: usize = 3000;

const BUILDER_KEYS: &[&str] = &[
    "accelerator",
    "boot_command",
    "boot_wait",
    "cd_content",
    "cd_files",
    "communicator",
    "disk_image",
    "disk_size",
    "format",
    "headless",
    "iso_checksum",
    "iso_url",
    "iso_urls",
    "memory",
    "cpus",
    "name",
    "output_directory",
    "qemuargs",
    "shutdown_command",
    "ssh_password",
    "ssh_port",
    "ssh_timeout",
    "ssh_username",
    "vm_name",
    "vnc_port_min",
    "memroy",
    "\u{1b}[31mred",
];

const PROVISIONER_KEYS: &[&str] = &[
    "inline",
    "script",
    "scripts",
    "source",
    "destination",
    "direction",
    "environment_vars",
    "execute_command",
    "expect_disconnect",
    "valid_exit_codes",
    "pause_before",
    "timeout",
    "max_retries",
    "command",
    "only",
    "except",
    "override",
    "inlin",
];

const POST_PROCESSOR_KEYS: &[&str] = &[
    "checksum_types",
    "output",
    "format",
    "keep_input_artifact",
    "image_name",
    "image_family",
    "project_id",
    "bucket",
    "only",
    "except",
];

const CHECK_KEYS: &[&str] = &[
    "name",
    "inline",
    "command",
    "file",
    "exists",
    "contains",
    "service",
    "active",
    "port",
    "package",
    "installed",
    "timeout",
    "retry_for",
    "only",
];

/// Go's own template functions.
const GO_BUILTINS: &[&str] = &[
    "and", "or", "not", "len", "index", "slice", "print", "printf", "println", "html", "js",
    "urlquery", "eq", "ne", "lt", "le", "gt", "ge",
];

struct Gen {
    rng: StdRng,
    vars: Vec<String>,
}

impl Gen {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.random_range(0..items.len())]
    }

    /// A function the engine knows (Packer's or Go's), or now and then one
    /// it does not.
    fn function(&mut self) -> &'static str {
        if self.chance(0.4) {
            return self.pick(GO_BUILTINS);
        }
        let i = self.rng.random_range(0..=FUNCTIONS.len());
        FUNCTIONS.get(i).copied().unwrap_or("nope")
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn var_name(&mut self) -> String {
        if self.vars.is_empty() || self.chance(0.1) {
            return format!("undeclared{}", self.rng.random_range(0..3));
        }
        let i = self.rng.random_range(0..self.vars.len());
        self.vars[i].clone()
    }

    fn literal(&mut self) -> String {
        match self.rng.random_range(0..9) {
            0 => "`plain`".into(),
            1 => format!("`{}`", self.var_name()),
            2 => "\"q\\t\\u00e9\\x41\"".into(),
            3 => self.rng.random_range(-3i64..40).to_string(),
            4 => "99999999999999999999".into(),
            5 => "true".into(),
            6 => ".Vars".into(),
            7 => "\"\\q\"".into(),
            _ => "``".into(),
        }
    }

    /// One pipeline; nesting past the engine's limit now and then.
    fn pipeline(&mut self, depth: usize) -> String {
        let commands = self.rng.random_range(1..4);
        let mut parts = Vec::new();
        for _ in 0..commands {
            let f = self.function();
            let mut cmd = f.to_string();
            if f == "user" && self.chance(0.8) {
                cmd.push_str(&format!(" `{}`", self.var_name()));
            } else {
                for _ in 0..self.rng.random_range(0..4) {
                    cmd.push(' ');
                    if depth < 6 && self.chance(0.3) {
                        let inner = self.pipeline(depth + 1);
                        cmd.push_str(&format!("({inner})"));
                    } else {
                        cmd.push_str(&self.literal());
                    }
                }
            }
            parts.push(cmd);
        }
        if self.chance(0.2) {
            parts.insert(0, self.literal());
        }
        parts.join(" | ")
    }

    /// A string with text, actions, comments, blocks and broken actions.
    fn template_string(&mut self) -> String {
        self.template_string_depth(0)
    }

    fn template_string_depth(&mut self, depth: usize) -> String {
        let mut out = String::new();
        if depth > 3 {
            return out;
        }
        for _ in 0..self.rng.random_range(0..4) {
            match self.rng.random_range(0..16) {
                0..=2 => out.push_str(self.pick(&["text ", "a-b ", "é ", "}} ", "\u{7}"])),
                3..=8 => {
                    let left = if self.chance(0.1) { "{{- " } else { "{{ " };
                    let right = if self.chance(0.1) { " -}}" } else { " }}" };
                    let p = self.pipeline(0);
                    out.push_str(&format!("{left}{p}{right}"));
                }
                9 => out.push_str("{{/* note */}}"),
                11..=13 => {
                    let head = self.pick(&["if", "with", "range", "if $v :=", "range $i :="]);
                    let cond = self.pipeline(1);
                    let body = self.template_string_depth(depth + 1);
                    let other = if self.chance(0.3) {
                        format!("{{{{- else -}}}}{}", self.template_string_depth(depth + 1))
                    } else {
                        String::new()
                    };
                    let inner = self.pick(&["", "{{break}}", "{{continue}}", "{{ $v }}", "{{.}}"]);
                    let end = self.pick(&["{{end}}", "{{ end -}}", ""]);
                    out.push_str(&format!("{{{{{head} {cond}}}}}{inner}{body}{other}{end}"));
                }
                14 => {
                    let n = self.rng.random_range(0..50);
                    let p = self.pipeline(1);
                    out.push_str(&format!("{{{{range {n}}}}}{{{{ {p} }}}}{{{{end}}}}"));
                }
                15 => out.push_str(self.pick(&[
                    "{{printf \"%5.2f|%-3d|%q|%x\" 3.14159 7 `a` 255}}",
                    "{{ printf \"%*d\" 900000 1 }}",
                    "{{ else }}",
                    "{{ end }}",
                    "{{ $x := 1 }}{{ $x = `a` }}{{ $x }}",
                    "{{ range 300000 }}{{ end }}",
                ])),
                10 => {
                    let n = self.rng.random_range(60..80);
                    out.push_str(&format!(
                        "{{{{ {}`x`{} }}}}",
                        "(lower ".repeat(n),
                        ")".repeat(n)
                    ));
                }
                _ => out.push_str(self.pick(&["{{", "{{ `", "{{ (", "{{ $x }}", "{{ | }}"])),
            }
        }
        out
    }

    fn scalar(&mut self) -> Json {
        match self.rng.random_range(0..10) {
            0 => json!(self.rng.random_range(-5i64..100_000)),
            1 => json!(self.chance(0.5)),
            2 => Json::Null,
            3 => json!(1.5),
            4 => json!(u64::MAX),
            _ => Json::String(self.template_string()),
        }
    }

    /// Any JSON value, mostly small.
    fn value(&mut self, depth: usize) -> Json {
        if depth > 3 || self.chance(0.6) {
            return self.scalar();
        }
        if self.chance(0.5) {
            let n = self.rng.random_range(0..4);
            Json::Array((0..n).map(|_| self.value(depth + 1)).collect())
        } else {
            let mut m = Map::new();
            for _ in 0..self.rng.random_range(0..4) {
                let k = self
                    .pick(&["a", "type", "name", "_c", "x\u{0}y"])
                    .to_string();
                m.insert(k, self.value(depth + 1));
            }
            Json::Object(m)
        }
    }

    fn object(&mut self, keys: &[&str], type_name: Option<&str>) -> Json {
        let mut m = Map::new();
        if let Some(t) = type_name {
            m.insert("type".into(), json!(t));
        }
        for _ in 0..self.rng.random_range(0..7) {
            let k = self.pick(keys).to_string();
            let v = match k.as_str() {
                "only" | "except" => json!([self.pick(&["q", "web", "nope"])]),
                _ => self.value(0),
            };
            m.insert(k, v);
        }
        Json::Object(m)
    }

    fn template(&mut self) -> Json {
        let n = self.rng.random_range(0..6);
        self.vars = (0..n).map(|i| format!("v{i}")).collect();
        let mut vars = Map::new();
        for name in self.vars.clone() {
            let v = match self.rng.random_range(0..6) {
                0 => Json::Null,
                1 => json!(3),
                2 => {
                    // Two references to another variable: chains of these double.
                    let other = self.var_name();
                    json!(format!("{{{{user `{other}`}}}}{{{{user `{other}`}}}}"))
                }
                _ => Json::String(self.template_string()),
            };
            vars.insert(name, v);
        }
        let mut root = Map::new();
        if !vars.is_empty() || self.chance(0.2) {
            root.insert("variables".into(), Json::Object(vars));
        }
        if self.chance(0.3) {
            let name = self.var_name();
            root.insert("sensitive-variables".into(), json!([name]));
        }
        let builders: Vec<Json> = (0..self.rng.random_range(0..3))
            .map(|i| {
                let t = if self.chance(0.9) { "qemu" } else { "docker" };
                let mut b = self.object(BUILDER_KEYS, Some(t));
                if let Some(m) = b.as_object_mut() {
                    m.insert("iso_url".into(), json!("/images/base.qcow2"));
                    m.insert("iso_checksum".into(), json!("none"));
                    m.insert("ssh_username".into(), json!("root"));
                    if i == 1 {
                        m.insert("name".into(), json!("web"));
                    }
                }
                b
            })
            .collect();
        root.insert("builders".into(), Json::Array(builders));
        if self.chance(0.7) {
            let provs: Vec<Json> = (0..self.rng.random_range(0..4))
                .map(|_| {
                    let t = self.pick(&["shell", "file", "shell-local", "ansible"]);
                    self.object(PROVISIONER_KEYS, Some(t))
                })
                .collect();
            root.insert("provisioners".into(), Json::Array(provs));
        }
        if self.chance(0.4) {
            let pps: Vec<Json> = (0..self.rng.random_range(0..3))
                .map(|_| {
                    let t = self.pick(&[
                        "checksum",
                        "manifest",
                        "compress",
                        "googlecompute-import",
                        "vagrant",
                    ]);
                    self.object(POST_PROCESSOR_KEYS, Some(t))
                })
                .collect();
            root.insert("post-processors".into(), Json::Array(pps));
        }
        if self.chance(0.3) {
            let checks: Vec<Json> = (0..self.rng.random_range(0..3))
                .map(|_| self.object(CHECK_KEYS, None))
                .collect();
            root.insert("tests".into(), Json::Array(checks));
        }
        if self.chance(0.1) {
            root.insert("buidlers".into(), json!([]));
        }
        Json::Object(root)
    }

    /// An expression that renders: functions with the arguments they take,
    /// variables declared before.
    fn good_expression(&mut self, known: usize, in_build: bool) -> String {
        let arg = if known > 0 && self.chance(0.6) {
            format!("(user `v{}`)", self.rng.random_range(0..known))
        } else {
            "`Some-Text`".to_string()
        };
        // build_name has no value in the variables section.
        let kinds = if in_build { 7 } else { 6 };
        match self.rng.random_range(0..kinds) {
            0 => format!("{{{{ {arg} | lower }}}}"),
            1 => format!("{{{{ upper {arg} }}}}"),
            2 => format!("{{{{ replace_all `-` `_` {arg} }}}}"),
            3 => format!("{{{{ split {arg} `-` 0 }}}}"),
            4 => format!("{{{{ {arg} | clean_resource_name }}}}"),
            5 => format!("x{{{{ {arg} }}}}y"),
            _ => "{{ build_name }}-{{ timestamp }}".to_string(),
        }
    }

    /// A template that should load: variables referring to earlier ones
    /// (declared in any order), builders and steps with valid values.
    fn clean_template(&mut self) -> Json {
        let n = self.rng.random_range(0..8);
        let mut vars = Map::new();
        for i in (0..n).rev() {
            let v = if i == 0 {
                "Base-Name".to_string()
            } else {
                self.good_expression(i, false)
            };
            vars.insert(format!("v{i}"), json!(v));
        }
        let builders: Vec<Json> = (0..self.rng.random_range(1..3))
            .map(|i| {
                let vm_name = self.good_expression(n, true);
                json!({
                    "type": "qemu", "name": format!("b{i}"),
                    "iso_url": "/images/base.qcow2", "iso_checksum": "none",
                    "ssh_username": "root", "vm_name": vm_name,
                    "memory": "{{ `2048` }}", "headless": "true",
                    "shutdown_command": self.good_expression(n, true),
                })
            })
            .collect();
        let provisioners: Vec<Json> = (0..self.rng.random_range(0..4))
            .map(|_| json!({"type": "shell", "inline": [self.good_expression(n, true), "echo {{ .Path }}"]}))
            .collect();
        json!({"variables": vars, "builders": builders, "provisioners": provisioners})
    }

    /// A few random edits of valid JSON text: what a broken editor, a
    /// wrong encoding or a truncated download leaves.
    fn mutate(&mut self, mut bytes: Vec<u8>) -> Vec<u8> {
        const SNIPPETS: &[&[u8]] = &[
            b"{{",
            b"}}",
            b"((((",
            b"[[[[",
            b"\"",
            b"\\",
            b"\xEF\xBB\xBF",
            b"\xFF",
            b"\xC3",
            b"\x1b[2J",
            b"\0",
            b"1e999",
            b"\"a\":1,",
            b"{{user `v0`}}{{user `v0`}}",
        ];
        for _ in 0..self.rng.random_range(1..5) {
            let at = self.rng.random_range(0..=bytes.len());
            match self.rng.random_range(0..5) {
                0 if at < bytes.len() => bytes[at] = self.rng.random(),
                1 if at < bytes.len() => {
                    let end = (at + self.rng.random_range(1..16)).min(bytes.len());
                    bytes.drain(at..end);
                }
                2 if at < bytes.len() => {
                    let end = (at + self.rng.random_range(1..32)).min(bytes.len());
                    let copy = bytes[at..end].to_vec();
                    bytes.splice(at..at, copy);
                }
                _ => {
                    let s = SNIPPETS[self.rng.random_range(0..SNIPPETS.len())];
                    bytes.splice(at..at, s.iter().copied());
                }
            }
        }
        bytes
    }
}

/// What every answer must be, whatever the input.
pub(super) fn check_answer(input: &[u8], result: &Result<super::Plan, TemplateError>) {
    match result {
        Ok(plan) => {
            // A plan holds what the template rendered: bounded by the
            // budget plus the text the input already had, per build.
            let size = format!("{plan:?}").len();
            let bound = MAX_TOTAL_BYTES + 64 * input.len() + 4096;
            assert!(
                size <= bound,
                "plan of {size} bytes from {} bytes",
                input.len()
            );
        }
        Err(e) => {
            match e {
                TemplateError::Invalid { problems, .. } => {
                    assert!(!problems.is_empty(), "no problem listed");
                    for p in problems {
                        assert!(!p.path.is_empty(), "a problem without a place: {p:?}");
                        assert!(!p.message.is_empty(), "a problem without a message: {p:?}");
                    }
                }
                TemplateError::Json { line, column, .. } => {
                    assert!(*line >= 1 && *column >= 1, "no position: {e}");
                }
                TemplateError::Decode { location, .. } => {
                    assert!(location.starts_with("line ") || location.starts_with("byte "));
                }
                TemplateError::Read { .. } => panic!("nothing is read from disk here: {e}"),
            }
            let shown = crate::error::error_chain(e);
            // One screenful of problems, each cut: about a mebibyte at most.
            assert!(shown.len() <= 1 << 20, "an error of {} bytes", shown.len());
            for c in shown.chars() {
                assert!(
                    c == '\n' || !c.is_control(),
                    "raw control character {c:?} in the error: {shown:?}"
                );
            }
        }
    }
}

fn run(input: &[u8]) {
    let result = load_bytes(Path::new("/t/template.json"), input, &Overrides::default());
    check_answer(input, &result);
}

#[test]
fn generated_templates_get_an_answer_that_names_its_place() {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(SEED),
        vars: Vec::new(),
    };
    let mut accepted = 0;
    let mut rejected = 0;
    for i in 0..STRUCTURED {
        let t = if i % 4 == 0 {
            g.clean_template()
        } else {
            g.template()
        };
        let bytes = serde_json::to_vec(&t).unwrap();
        let result = load_bytes(Path::new("/t/template.json"), &bytes, &Overrides::default());
        check_answer(&bytes, &result);
        if let (0, Err(e)) = (i % 4, &result) {
            panic!("a valid template was refused: {e}\n{t}");
        }
        if result.is_ok() {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    // Both sides of the validator are exercised, not only its errors.
    assert!(accepted > STRUCTURED / 5, "only {accepted} accepted");
    assert!(rejected > STRUCTURED / 2, "only {rejected} rejected");
}

#[test]
fn mutated_templates_get_an_answer_that_names_its_place() {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(SEED + 1),
        vars: Vec::new(),
    };
    let demo = include_bytes!("../../templates/demo.json");
    for i in 0..MUTATED {
        let base = if i % 3 == 0 {
            demo.to_vec()
        } else {
            let t = g.template();
            serde_json::to_vec_pretty(&t).unwrap()
        };
        let input = g.mutate(base);
        run(&input);
    }
}

#[test]
fn generated_expressions_render_or_fail_within_bounds() {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(SEED + 2),
        vars: vec!["v0".into(), "big".into()],
    };
    let funcs = FuncCtx {
        env_allowed: true,
        vars: [
            ("v0".to_string(), "a-b".to_string()),
            ("big".to_string(), "ab".repeat(1 << 18)),
        ]
        .into(),
        failed_vars: Default::default(),
        build_name: Some("web".into()),
        build_type: Some("qemu".into()),
        template_dir: "/t".into(),
        pwd: "/p".into(),
        now: chrono::Utc::now(),
        budget: Default::default(),
    };
    let mut ok = 0;
    for _ in 0..EXPRESSIONS {
        let text = g.template_string();
        match interpolate::render(&text, &funcs) {
            Ok(out) => {
                ok += 1;
                assert!(out.len() <= MAX_VALUE_BYTES + text.len(), "{text}");
            }
            Err(e) => assert!(!e.to_string().is_empty(), "{text}"),
        }
    }
    assert!(ok > EXPRESSIONS / 20, "only {ok} rendered");
}

/// Each reproducer of a crash or hang, with the place its error names.
#[test]
fn pathological_templates_are_refused_at_their_place() {
    let builder =
        json!({"type": "qemu", "iso_url": "/i.qcow2", "iso_checksum": "none", "ssh_username": "u"});
    let cases: Vec<(Json, &str, &str)> = vec![
        (
            json!({"variables": {"x": format!("{{{{ {}`a`{} }}}}", "(".repeat(30_000), ")".repeat(30_000))}, "builders": [builder]}),
            "variables.x",
            "nested more than 64 deep",
        ),
        (
            {
                let mut v = Map::new();
                v.insert("e0".into(), json!("aaaaaaaaaaaaaaaa"));
                for i in 1..30 {
                    v.insert(
                        format!("e{i}"),
                        json!(format!("{{{{user `e{0}`}}}}{{{{user `e{0}`}}}}", i - 1)),
                    );
                }
                json!({"variables": v, "builders": [builder]})
            },
            "variables.e17",
            "more than 1 MiB",
        ),
        (
            {
                let mut s = "`aaaaaaaaaa`".to_string();
                for _ in 0..40 {
                    s = format!("(replace_all `a` `aa` {s})");
                }
                json!({"variables": {"x": format!("{{{{ {s} }}}}")}, "builders": [builder]})
            },
            "variables.x",
            "more than 1 MiB",
        ),
        (
            json!({"builders": [{"type": "qemu", "iso_url": "/i.qcow2", "iso_checksum": "none", "ssh_username": "u",
                "boot_command": ["a", "{{ `x` | replace_all `` `xxxxxxxxxxxxxxxx` | replace_all `x` `xxxxxxxxxxxxxxxx` | replace_all `x` `xxxxxxxxxxxxxxxx` | replace_all `x` `xxxxxxxxxxxxxxxx` | replace_all `x` `xxxxxxxxxxxxxxxx` }}"]}]}),
            "builders[0].boot_command[1]",
            "more than 1 MiB",
        ),
    ];
    for (template, place, message) in cases {
        let bytes = serde_json::to_vec(&template).unwrap();
        let result = load_bytes(Path::new("/t/t.json"), &bytes, &Overrides::default());
        check_answer(&bytes, &result);
        let Err(TemplateError::Invalid { problems, .. }) = result else {
            panic!("expected problems for {place}");
        };
        assert!(
            problems
                .iter()
                .any(|p| p.path == place && p.message.contains(message)),
            "no problem at {place} saying {message:?}: {problems:?}"
        );
    }
}

/// Inputs the fuzzer found, kept as regressions.
#[test]
fn fuzzer_findings() {
    let cases: &[(&[u8], &str)] = &[
        // An empty key (valid JSON) left a problem without a place.
        (
            br#"{"": 1, "builders": [{"type": "qemu", "": 2}], "variables": {"": "x"}}"#,
            "\"\"",
        ),
    ];
    for (input, place) in cases {
        let result = load_bytes(Path::new("/t/t.json"), input, &Overrides::default());
        check_answer(input, &result);
        let Err(TemplateError::Invalid { problems, .. }) = result else {
            panic!("expected problems");
        };
        assert!(
            problems.iter().any(|p| p.path.contains(place)),
            "{problems:?}"
        );
    }
}

#[test]
fn a_long_chain_of_variables_resolves_and_a_long_cycle_is_named() {
    let mut v = Map::new();
    for i in 0..2000 {
        v.insert(format!("v{i}"), json!(format!("{{{{user `v{}`}}}}", i + 1)));
    }
    v.insert("v2000".into(), json!("end"));
    let t = json!({"variables": v, "builders": [{"type": "qemu", "iso_url": "/i.qcow2", "iso_checksum": "none", "ssh_username": "u"}]});
    let plan = load_bytes(
        Path::new("/t/t.json"),
        &serde_json::to_vec(&t).unwrap(),
        &Overrides::default(),
    )
    .unwrap();
    assert!(plan.variables.iter().all(|v| v.value == "end"));

    let mut v = Map::new();
    for i in 0..1000 {
        v.insert(
            format!("v{i:04}"),
            json!(format!("{{{{user `v{:04}`}}}}", (i + 1) % 1000)),
        );
    }
    let t = json!({"variables": v, "builders": [{"type": "qemu", "iso_url": "/i.qcow2", "iso_checksum": "none", "ssh_username": "u"}]});
    let Err(TemplateError::Invalid { problems, .. }) = load_bytes(
        Path::new("/t/t.json"),
        &serde_json::to_vec(&t).unwrap(),
        &Overrides::default(),
    ) else {
        panic!("a cycle was accepted");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "variables.v0000");
    assert!(
        problems[0]
            .message
            .starts_with("is part of a cycle of variables: v0000 -> v0001 -> ")
            && problems[0].message.ends_with("... (992 more) -> v0000"),
        "{}",
        problems[0].message
    );
}

#[test]
fn many_problems_are_listed_up_to_a_screenful_and_counted() {
    let mut b = Map::new();
    for (k, v) in [
        ("type", "qemu"),
        ("iso_url", "/i.qcow2"),
        ("iso_checksum", "none"),
        ("ssh_username", "u"),
    ] {
        b.insert(k.into(), json!(v));
    }
    for i in 0..5000 {
        b.insert(format!("bad{i}"), json!(1));
    }
    b.insert("k".repeat(1 << 20), json!(1));
    b.insert("\u{1b}]0;title\u{7}".into(), json!(1));
    let t = json!({"builders": [b]});
    let bytes = serde_json::to_vec(&t).unwrap();
    let result = load_bytes(
        Path::new("/t/t\u{1b}[2J.json"),
        &bytes,
        &Overrides::default(),
    );
    check_answer(&bytes, &result);
    let e = result.unwrap_err();
    let TemplateError::Invalid { problems, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(problems.len(), 5002);
    let shown = e.to_string();
    assert!(
        shown.starts_with("/t/t\\u{1b}[2J.json has 5002 error(s):"),
        "{}",
        &shown[..80]
    );
    assert!(
        shown.ends_with("  ... and 4902 more: fix these and validate again"),
        "{}",
        &shown[shown.len() - 80..]
    );
}
