//! Packer's legacy JSON template: parsing, variables, `{{ }}` functions,
//! strict validation; it produces the [`Plan`] the pipeline runs from.

mod ansible;
mod boot;
mod builder;
mod builder_types;
mod checks;
mod communicator;
mod decode;
mod duration;
mod fix;
mod floppy;
mod gce_shapes;
mod googlecompute;
mod heads;
mod json;
mod paths;
mod post_processor;
mod provisioner;
pub(crate) mod show;
mod unsupported;
mod vagrant;
mod variables;

pub use duration::parse as parse_duration;
pub use fix::Fix;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};

use crate::plan::render::funcs::FuncCtx;
use crate::plan::{
    BuildSpec, CheckSpec, Location, Plan, PostProcessorSpec, ProvisionerSpec, SkippedBuild,
};
use crate::source::image_map::{ImageMap, ImageMapError};
use checks::CheckHead;
use decode::{Cx, Obj, json_type};
use heads::{BuilderHead, ProvisionerHead, builder_heads, filter, filter_quiet, provisioner_heads};
use post_processor::RawPp;

/// One `-var` or `-var-file` from the command line.
#[derive(Clone, PartialEq, Eq)]
pub enum Override {
    /// `-var name=value`.
    Var(String, String),
    /// `-var-file path`: a JSON object of variable values.
    File(PathBuf),
}

/// Without the value: it may be a sensitive variable's.
impl std::fmt::Debug for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Override::Var(name, _) => f.debug_tuple("Var").field(name).field(&"<hidden>").finish(),
            Override::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// `-var` and `-var-file` in the order given: as in Packer 1.6, a later one
/// wins over an earlier one, whichever kind each is.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// The overrides, in command-line order.
    pub entries: Vec<Override>,
    /// `-source-image NAME=URL`: the local disk for a `googlecompute`
    /// build's source image or family.
    pub source_images: Vec<(String, String)>,
    /// The image map file (`KILN_IMAGE_MAP`).
    pub image_map: Option<PathBuf>,
}

/// One thing wrong with a template, at a JSON path such as
/// `builders[0].disk_size`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    /// Where in the template: `builders[0].disk_size`, or `(template)`.
    pub path: String,
    /// What is wrong, and often how to fix it.
    pub message: String,
}

/// Why a template, a `-var-file` or a checks file could not be loaded.
// Paths and messages hold text from the input: they are escaped when
// shown, never written raw to a terminal.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("cannot read {}", shown(path))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed JSON.
    #[error("{}: not valid JSON at line {line}, column {column}", shown(path))]
    Json {
        /// The file.
        path: PathBuf,
        /// The line of the first error, from 1.
        line: usize,
        /// Its column, from 1.
        column: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// Not text kiln decodes (a byte-order mark, not UTF-8, too large or
    /// too deeply nested); `message` says how to fix it.
    #[error("{}: {location}: {message}", shown(path))]
    Decode {
        /// The file.
        path: PathBuf,
        /// Where in the file: a line and column, or a byte offset.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// Every problem found, all at once.
    #[error("{} has {} error(s):\n{}{}", shown(path), problems.len(), format_problems(problems), format_rewritten(rewritten))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The problems, in the order found.
        problems: Vec<Problem>,
        /// The deprecated keys read as their modern form (the warnings of
        /// a template that loads): a problem may name the modern key.
        rewritten: Vec<String>,
        /// The values of `sensitive-variables` known when loading stopped:
        /// a problem's message may quote one (`expected an integer, got
        /// "..."`), so whoever prints the error must mask them.
        sensitive_values: Vec<String>,
    },
}

impl TemplateError {
    /// The secrets this error's text may contain (see `Invalid`).
    pub fn sensitive_values(&self) -> &[String] {
        match self {
            TemplateError::Invalid {
                sensitive_values, ..
            } => sensitive_values,
            TemplateError::Read { .. }
            | TemplateError::Json { .. }
            | TemplateError::Decode { .. } => &[],
        }
    }
}

fn shown(path: &Path) -> String {
    show::clip(&path.to_string_lossy(), 1024)
}

/// How much of one problem's path and message is shown: a value quoted in a
/// message can be a mebibyte.
const SHOWN_PATH_BYTES: usize = 512;
const SHOWN_MESSAGE_BYTES: usize = 8 << 10;
/// How many problems are listed: nobody reads past the first screenfuls,
/// and a generated template can have thousands.
const SHOWN_PROBLEMS: usize = 100;

fn format_problems(problems: &[Problem]) -> String {
    let mut lines: Vec<String> = problems
        .iter()
        .take(SHOWN_PROBLEMS)
        .map(|p| {
            format!(
                "  * {}: {}",
                show::clip(&p.path, SHOWN_PATH_BYTES),
                show::clip(&p.message, SHOWN_MESSAGE_BYTES)
            )
        })
        .collect();
    if problems.len() > SHOWN_PROBLEMS {
        lines.push(format!(
            "  ... and {} more: fix these and validate again",
            problems.len() - SHOWN_PROBLEMS
        ));
    }
    lines.join("\n")
}

/// The deprecations rewritten before decoding, after the problems: a
/// problem at `builders[0].iso_checksum` may come from `iso_checksum_url`.
fn format_rewritten(rewritten: &[String]) -> String {
    if rewritten.is_empty() {
        return String::new();
    }
    let mut out = "\nDeprecated keys were read as their modern form (see kiln fix):".to_string();
    for line in rewritten.iter().take(SHOWN_PROBLEMS) {
        out.push_str(&format!("\n  * {}", show::clip(line, SHOWN_MESSAGE_BYTES)));
    }
    out
}

/// The top-level keys of a template. Keys starting with `_` are comments, as
/// in Packer.
const TOP_LEVEL: &[&str] = &[
    "tests",
    "variables",
    "sensitive-variables",
    "description",
    "min_packer_version",
    "builders",
    "provisioners",
    "post-processors",
];

/// How many provisioners and post-processors, counted once per build they
/// apply to, one template may have: each is decoded per build (its
/// `{{build_name}}` differs). 10 builds of 1000 steps each is far beyond any
/// real template and still decodes in a fraction of a second.
const MAX_BUILD_STEPS: usize = 10_000;

/// Reads, interpolates and validates a template.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Plan, TemplateError> {
    let bytes = json::read(path).map_err(|e| read_error(path, e))?;
    load_bytes(path, &bytes, overrides)
}

/// [`load`] for a template already in memory (the fuzz target and the
/// property tests); `path` names it in messages and locates relative paths.
#[doc(hidden)]
pub fn load_bytes(path: &Path, bytes: &[u8], overrides: &Overrides) -> Result<Plan, TemplateError> {
    let (mut root, mut file_problems) = json::decode(bytes).map_err(|e| read_error(path, e))?;
    // Deprecated keys are read as their modern form (what `kiln fix`
    // writes), and said so.
    let fixes = fix::apply(&mut root);
    let warnings = warnings(&root, &fixes);
    let mut given = Vec::new();
    for entry in &overrides.entries {
        match entry {
            Override::File(file) => given.extend(read_var_file(file, &mut file_problems)?),
            Override::Var(name, value) => given.push((name.clone(), value.clone())),
        }
    }

    let cwd = std::env::current_dir().map_err(|source| TemplateError::Read {
        path: PathBuf::from("."),
        source,
    })?;
    let template_dir = paths::resolve(&cwd, &path.to_string_lossy())
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.clone());
    let mut cx = Cx::new(FuncCtx {
        env_allowed: false,
        vars: Default::default(),
        failed_vars: Default::default(),
        build_name: None,
        build_type: None,
        template_dir: template_dir.to_string_lossy().into_owned(),
        pwd: cwd.to_string_lossy().into_owned(),
        now: chrono::Utc::now(),
        budget: Default::default(),
    });
    for p in file_problems {
        cx.problem(p.path, p.message);
    }

    let mut sensitive_values = Vec::new();
    let plan = match &root {
        Json::Object(map) => plan(&mut cx, map, &given, overrides, &cwd, &mut sensitive_values),
        other => {
            cx.problem(
                "(template)",
                format!("expected a JSON object, got {}", json_type(other)),
            );
            None
        }
    };
    let mut problems = cx.take_problems();
    if plan.is_none() && problems.is_empty() {
        // Every failed decode reports why; this only guards against a gap.
        problems.push(Problem {
            path: "(template)".into(),
            message: "the template could not be loaded".into(),
        });
    }
    match plan {
        Some(mut plan) if problems.is_empty() => {
            plan.warnings = warnings;
            plan.warnings.extend(cx.take_warnings());
            Ok(plan)
        }
        _ => Err(TemplateError::Invalid {
            path: path.to_path_buf(),
            problems,
            rewritten: warnings,
            sensitive_values,
        }),
    }
}

/// The fixes worth a warning: deprecations, outside the builders kiln
/// skips (it never reads their options).
fn warnings(root: &Json, fixes: &[fix::Fix]) -> Vec<String> {
    let skipped = |index: usize| {
        root.get("builders")
            .and_then(|b| b.get(index))
            .and_then(|b| b.get("type"))
            .and_then(Json::as_str)
            .is_some_and(|t| builder_types::kind(t) != builder_types::Kind::Buildable)
    };
    fixes
        .iter()
        .filter(|f| f.deprecated && !f.builder.is_some_and(skipped))
        .map(ToString::to_string)
        .collect()
}

/// `kiln fix`: the template with its deprecated keys rewritten to their
/// modern form, as `packer fix` does, and what was rewritten. Nothing else
/// is checked.
pub fn fix(path: &Path) -> Result<(Json, Vec<Fix>), TemplateError> {
    let (mut root, problems) = read_json(path)?;
    if !root.is_object() {
        return Err(TemplateError::Invalid {
            path: path.to_path_buf(),
            problems: vec![Problem {
                path: "(file)".into(),
                message: format!("expected a JSON object, got {}", json_type(&root)),
            }],
            rewritten: Vec::new(),
            sensitive_values: Vec::new(),
        });
    }
    // A key written twice: which one to keep is the author's choice.
    if !problems.is_empty() {
        return Err(TemplateError::Invalid {
            path: path.to_path_buf(),
            problems,
            rewritten: Vec::new(),
            sensitive_values: Vec::new(),
        });
    }
    let fixes = fix::apply(&mut root);
    Ok((root, fixes))
}

/// `validate -syntax-only`: the file is readable, well-formed JSON with an
/// object at the top and no key twice; nothing of its meaning is checked.
pub fn check_syntax(path: &Path) -> Result<(), TemplateError> {
    let (root, mut problems) = read_json(path)?;
    if !root.is_object() {
        problems.push(Problem {
            path: "(file)".into(),
            message: format!("expected a JSON object, got {}", json_type(&root)),
        });
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TemplateError::Invalid {
            path: path.to_path_buf(),
            problems,
            rewritten: Vec::new(),
            sensitive_values: Vec::new(),
        })
    }
}

/// The file's JSON and its duplicate keys, as problems at their paths.
fn read_json(path: &Path) -> Result<(Json, Vec<Problem>), TemplateError> {
    let bytes = json::read(path).map_err(|e| read_error(path, e))?;
    json::decode(&bytes).map_err(|e| read_error(path, e))
}

fn read_error(path: &Path, e: json::ReadError) -> TemplateError {
    match e {
        json::ReadError::Io(source) => TemplateError::Read {
            path: path.to_path_buf(),
            source,
        },
        json::ReadError::Text { location, message } => TemplateError::Decode {
            path: path.to_path_buf(),
            location,
            message,
        },
        json::ReadError::Syntax(source) => TemplateError::Json {
            path: path.to_path_buf(),
            line: source.line(),
            // serde_json says column 0 for the end of the file after a
            // newline: the first column of the next line.
            column: source.column().max(1),
            source,
        },
    }
}

/// A `-var-file`: a JSON object of strings (numbers and bools are taken as
/// their text). A `null` sets the variable to the empty string, as Go's JSON
/// decoding into Packer's string map does: it satisfies a required variable.
fn read_var_file(
    file: &Path,
    problems: &mut Vec<Problem>,
) -> Result<Vec<(String, String)>, TemplateError> {
    let (root, duplicates) = read_json(file)?;
    let where_ = format!("-var-file {}", file.display());
    problems.extend(duplicates.into_iter().map(|p| Problem {
        path: format!("{where_}: {}", p.path),
        message: p.message,
    }));
    let Json::Object(map) = root else {
        problems.push(Problem {
            path: where_,
            message: format!(
                "expected a JSON object of strings, got {}",
                json_type(&root)
            ),
        });
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (k, v) in map {
        match v {
            Json::String(s) => out.push((k, s)),
            Json::Number(n) => out.push((k, n.to_string())),
            Json::Bool(b) => out.push((k, b.to_string())),
            Json::Null => out.push((k, String::new())),
            other => problems.push(Problem {
                path: format!("{where_}: {k}"),
                message: format!("expected a string, got {}", json_type(&other)),
            }),
        }
    }
    Ok(out)
}

/// `sensitive_values` gets the secrets as soon as the variables are
/// resolved, so that they are known even when a later part fails.
fn plan(
    cx: &mut Cx,
    root: &Map<String, Json>,
    given: &[(String, String)],
    overrides: &Overrides,
    cwd: &Path,
    sensitive_values: &mut Vec<String>,
) -> Option<Plan> {
    check_top_level_keys(cx, root);
    let vars = variables::resolve(
        cx,
        root.get("variables"),
        root.get("sensitive-variables"),
        given,
    );
    sensitive_values.clone_from(&vars.sensitive_values);
    let description = description(cx, root);

    let builders = builder_heads(cx, root.get("builders"));
    let names: Vec<String> = builders.iter().map(|b| b.name.clone()).collect();
    let provisioners = provisioner_heads(cx, root.get("provisioners"), &names);
    let pp_chains = match root.get("post-processors") {
        None | Some(Json::Null) => Vec::new(),
        Some(section) => post_processor::chains(cx, section),
    };
    for chain in &pp_chains {
        for pp in chain {
            if let Some(map) = pp.map {
                let _ = filter(cx, &pp.path, map, &names);
            }
        }
    }
    if too_many_steps(cx, builders.len(), &provisioners, &pp_chains) {
        return None;
    }

    let checks = match root.get("tests") {
        None | Some(Json::Null) => Vec::new(),
        Some(section) => checks::decode_all(cx, "tests", section, cwd, true),
    };
    for (index, check) in checks.iter().enumerate() {
        let _ = filter(cx, &format!("tests[{index}]"), check.map, &names);
    }

    let gce = builders
        .iter()
        .any(|b| b.skipped.is_none() && b.builder_type == "googlecompute")
        .then(|| GceContext::new(cx, overrides, cwd));
    let sections = Sections {
        provisioners: &provisioners,
        post_processors: &pp_chains,
        checks: &checks,
        gce: gce.as_ref(),
    };
    let mut builds = Vec::new();
    let mut skipped = Vec::new();
    for b in &builders {
        if let Some(reason) = &b.skipped {
            skipped.push(SkippedBuild {
                name: b.name.clone(),
                builder_type: b.builder_type.clone(),
                reason: reason.clone(),
            });
            continue;
        }
        cx.funcs.build_name = Some(b.name.clone());
        cx.funcs.build_type = Some(b.builder_type.clone());
        builds.extend(build(cx, b, &sections, cwd));
    }
    cx.funcs.build_name = None;
    cx.funcs.build_type = None;

    if cx.has_problems() {
        return None;
    }
    Some(Plan {
        description,
        builds,
        sensitive_values: vars.sensitive_values,
        variables: vars.infos,
        warnings: Vec::new(),
        skipped,
    })
}

/// Reports the top-level keys that are neither known nor comments.
fn check_top_level_keys(cx: &Cx, root: &Map<String, Json>) {
    for key in root.keys() {
        if key.starts_with('_') || TOP_LEVEL.contains(&key.as_str()) {
            continue;
        }
        let mut message = "unknown top-level key".to_string();
        if cx.listing()
            && let Some(best) = decode::closest(key, TOP_LEVEL)
        {
            message.push_str(&format!(" (did you mean {best}?)"));
        }
        cx.problem(decode::key_name(key), message);
    }
}

/// The `description`, and a check that `min_packer_version` is a string
/// (kiln does not compare it).
fn description(cx: &Cx, root: &Map<String, Json>) -> Option<String> {
    let description = match root.get("description") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(other) => {
            cx.problem(
                "description",
                format!("expected a string, got {}", json_type(other)),
            );
            None
        }
    };
    if let Some(v) = root.get("min_packer_version")
        && !v.is_string()
    {
        cx.problem(
            "min_packer_version",
            format!("expected a string, got {}", json_type(v)),
        );
    }
    description
}

/// Whether the builds × steps to decode exceed [`MAX_BUILD_STEPS`]
/// (reported as a problem).
fn too_many_steps(
    cx: &Cx,
    builders: usize,
    provisioners: &[ProvisionerHead<'_>],
    pp_chains: &[Vec<RawPp<'_>>],
) -> bool {
    let steps = provisioners.len() + pp_chains.iter().map(Vec::len).sum::<usize>();
    let work = builders.saturating_mul(steps);
    if work > MAX_BUILD_STEPS {
        cx.problem(
            "provisioners",
            format!(
                "{builders} builds × {steps} provisioners and post-processors make {work} to check, \
                 more than the {MAX_BUILD_STEPS} kiln takes from one template: split it"
            ),
        );
        return true;
    }
    false
}

/// The template's sections every build takes its share of.
struct Sections<'s, 'a> {
    provisioners: &'s [ProvisionerHead<'a>],
    post_processors: &'s [Vec<RawPp<'a>>],
    checks: &'s [CheckHead<'a>],
    /// What `googlecompute` builds need; `None` when there are none.
    gce: Option<&'s GceContext>,
}

/// The image map and the host a `googlecompute` build's machine is sized
/// for.
struct GceContext {
    /// `None` when the map file or a `-source-image` is wrong (reported).
    images: Option<ImageMap>,
    host: gce_shapes::Host,
}

impl GceContext {
    fn new(cx: &Cx, overrides: &Overrides, cwd: &Path) -> GceContext {
        let location =
            |dir: &Path, s: &str| -> Result<Location, String> { paths::image_location(dir, s) };
        let checksum = |dir: &Path, s: &str| builder::parse_checksum(s, dir);
        let images = ImageMap::load(
            &overrides.source_images,
            overrides.image_map.as_deref(),
            cwd,
            &location,
            &checksum,
        )
        .map_err(|e| {
            let place = match &e {
                ImageMapError::Argument { .. } => "-source-image",
                _ => "KILN_IMAGE_MAP",
            };
            cx.problem(place, e.to_string());
        })
        .ok();
        GceContext {
            images,
            host: gce_shapes::Host::current(),
        }
    }
}

/// One builder with the provisioners, post-processors and checks that apply
/// to it, decoded with its `{{build_name}}`; `None` if the builder has a
/// problem.
fn build(
    cx: &Cx,
    b: &BuilderHead<'_>,
    sections: &Sections<'_, '_>,
    cwd: &Path,
) -> Option<BuildSpec> {
    let (qemu, gce) = match (b.map, b.builder_type.as_str(), sections.gce) {
        (None, ..) => (None, None),
        (Some(map), "googlecompute", Some(context)) => {
            let o = Obj::new(cx, b.path.clone(), map);
            match googlecompute::decode(o, &b.name, cwd, context.images.as_ref(), context.host) {
                Some(decoded) => {
                    for line in decoded.warnings {
                        cx.warn(line);
                    }
                    (Some(decoded.qemu), Some(decoded.gce))
                }
                None => (None, None),
            }
        }
        (Some(map), ..) => (
            builder::decode(Obj::new(cx, b.path.clone(), map), &b.name, cwd),
            None,
        ),
    };
    let provisioners = build_provisioners(cx, &b.name, sections.provisioners, cwd);
    let post_processors = build_post_processors(cx, &b.name, sections.post_processors, cwd);
    Some(BuildSpec {
        name: b.name.clone(),
        builder_type: b.builder_type.clone(),
        qemu: qemu?,
        gce,
        provisioners,
        post_processors,
        tests: sections
            .checks
            .iter()
            .filter(|c| filter_quiet(c.map).applies(&b.name))
            .map(|c| c.spec.clone())
            .collect(),
    })
}

/// The provisioners that apply to build `name`, each with its `override`
/// for the build merged in.
fn build_provisioners(
    cx: &Cx,
    name: &str,
    provisioners: &[ProvisionerHead<'_>],
    cwd: &Path,
) -> Vec<ProvisionerSpec> {
    let mut specs = Vec::new();
    for p in provisioners {
        if !p.filter.applies(name) {
            continue;
        }
        let mut merged = p.map.clone();
        if let Some(over) = p.overrides.iter().find(|(n, _)| n == name) {
            for (k, v) in over.1 {
                merged.insert(k.clone(), v.clone());
            }
        }
        let mut o = Obj::new(cx, p.path.clone(), &merged);
        o.allow(&["only", "except", "override"]);
        if let Some(spec) = provisioner::decode(o, &p.type_name, p.index, cwd) {
            specs.push(spec);
        }
    }
    specs
}

/// The post-processor chains of build `name`, without the post-processors
/// that do not apply to it; a chain left empty is dropped.
fn build_post_processors(
    cx: &Cx,
    name: &str,
    pp_chains: &[Vec<RawPp<'_>>],
    cwd: &Path,
) -> Vec<Vec<PostProcessorSpec>> {
    let mut chains = Vec::new();
    for chain in pp_chains {
        let mut specs = Vec::new();
        for pp in chain {
            let empty = Map::new();
            let map = pp.map.unwrap_or(&empty);
            let applies = pp.map.is_none_or(|m| filter_quiet(m).applies(name));
            if !applies {
                continue;
            }
            let mut o = Obj::new(cx, pp.path.clone(), map);
            // Packer 1.6 takes a post-processor's `name` (it only labels it).
            o.allow(&["only", "except", "name"]);
            if let Some(spec) = post_processor::decode(o, &pp.type_name, cwd) {
                specs.push(spec);
            }
        }
        if !specs.is_empty() {
            chains.push(specs);
        }
    }
    chains
}

/// Reads the checks file of `kiln test`: `{"tests": [...]}`, each check as
/// in a template's `tests` (without `only`/`except`). `{{ }}` functions
/// work, but there are no variables.
pub fn load_checks(path: &Path) -> Result<Vec<CheckSpec>, TemplateError> {
    let (root, duplicates) = read_json(path)?;
    let cwd = std::env::current_dir().map_err(|source| TemplateError::Read {
        path: PathBuf::from("."),
        source,
    })?;
    let cx = Cx::new(FuncCtx {
        env_allowed: false,
        vars: Default::default(),
        failed_vars: Default::default(),
        build_name: None,
        build_type: None,
        template_dir: paths::resolve(&cwd, &path.to_string_lossy())
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        pwd: cwd.to_string_lossy().into_owned(),
        now: chrono::Utc::now(),
        budget: Default::default(),
    });
    for p in duplicates {
        cx.problem(p.path, p.message);
    }
    let mut checks = Vec::new();
    match &root {
        Json::Object(map) => {
            for key in map.keys() {
                if key != "tests" && !key.starts_with('_') {
                    cx.problem(
                        decode::key_name(key),
                        "unknown key: a checks file holds only \"tests\"",
                    );
                }
            }
            match map.get("tests") {
                Some(section) => {
                    checks = checks::decode_all(&cx, "tests", section, &cwd, false)
                        .into_iter()
                        .map(|c| c.spec)
                        .collect();
                }
                None => cx.problem("tests", "is required: the list of checks"),
            }
        }
        other => cx.problem(
            "(file)",
            format!("expected a JSON object, got {}", json_type(other)),
        ),
    }
    let problems = cx.take_problems();
    if problems.is_empty() {
        Ok(checks)
    } else {
        Err(TemplateError::Invalid {
            path: path.to_path_buf(),
            problems,
            rewritten: Vec::new(),
            sensitive_values: Vec::new(),
        })
    }
}

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod skip_tests;
#[cfg(test)]
mod tests;
