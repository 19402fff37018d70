//! `kiln inspect`: what a template holds, with secrets masked.

use std::process::ExitCode;

use super::args::TemplateArgs;
use super::redact::{MASK, Redactor};
use super::session::Report;
use crate::plan::{Plan, PostProcessorSpec};

/// `kiln inspect`: prints what the template's plan holds.
pub(super) fn run(args: &TemplateArgs, machine_readable: bool) -> ExitCode {
    let report = Report::new(machine_readable);
    let plan = match super::load_plan(args) {
        Ok(plan) => plan,
        // Whatever stops it is in the template or the arguments.
        Err(err) => return report.usage_error(&err),
    };
    for warning in &plan.warnings {
        report.warn(warning);
    }
    if machine_readable {
        for (target, fields) in records(&plan) {
            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
            report.record(&target, &fields);
        }
    } else {
        report.text(&render(&plan));
    }
    ExitCode::SUCCESS
}

/// Packer's `inspect -machine-readable` records (`template-variable`,
/// `template-builder`, ...), masked and escaped as the text is. The
/// provisioners and post-processors are listed per build, as kiln plans
/// them.
fn records(plan: &Plan) -> Vec<(String, Vec<String>)> {
    let redactor = Redactor::new(&plan.sensitive_values);
    let clean = |text: &str| crate::template::show::escape(&redactor.redact(text)).into_owned();
    let mut out = Vec::new();
    if let Some(description) = &plan.description {
        out.push((
            String::new(),
            vec!["template-description".into(), clean(description)],
        ));
    }
    for variable in &plan.variables {
        let value = if variable.sensitive {
            MASK.to_string()
        } else {
            clean(&variable.value)
        };
        let required = if variable.required { "1" } else { "0" };
        out.push((
            String::new(),
            vec![
                "template-variable".into(),
                clean(&variable.name),
                value,
                required.into(),
            ],
        ));
    }
    for build in &plan.builds {
        let name = clean(&build.name);
        out.push((
            String::new(),
            vec![
                "template-builder".into(),
                name.clone(),
                clean(&build.builder_type),
            ],
        ));
        for provisioner in &build.provisioners {
            out.push((
                name.clone(),
                vec!["template-provisioner".into(), clean(&provisioner.type_name)],
            ));
        }
        for chain in &build.post_processors {
            for post in chain {
                out.push((
                    name.clone(),
                    vec!["template-post-processor".into(), post.type_name().into()],
                ));
            }
        }
    }
    // Packer lists every builder; the ones kiln skips have no steps.
    for skipped in &plan.skipped {
        out.push((
            String::new(),
            vec![
                "template-builder".into(),
                clean(&skipped.name),
                clean(&skipped.builder_type),
            ],
        ));
    }
    out
}

/// Everything shown, masked: a sensitive variable's own value, and any
/// other value (a default, a description, a name) that holds one.
/// Control characters from the template are shown escaped, line by line,
/// so a value cannot drive the terminal.
fn render(plan: &Plan) -> String {
    let masked = Redactor::new(&plan.sensitive_values).redact(&render_plain(plan));
    masked
        .split('\n')
        .map(|line| crate::template::show::escape(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn render_plain(plan: &Plan) -> String {
    let mut out = String::new();
    if let Some(description) = &plan.description {
        out.push_str(&format!("Description:\n\n  {description}\n\n"));
    }
    let (required, optional): (Vec<_>, Vec<_>) = plan.variables.iter().partition(|v| v.required);
    if !required.is_empty() {
        out.push_str("Required variables:\n\n");
        for variable in &required {
            out.push_str(&format!("  {}\n", variable.name));
        }
        out.push('\n');
    }
    out.push_str("Optional variables and their defaults:\n\n");
    if optional.is_empty() {
        out.push_str("  <No variables>\n");
    }
    for variable in &optional {
        let value = if variable.sensitive {
            MASK
        } else {
            variable.value.as_str()
        };
        out.push_str(&format!("  {} = {}\n", variable.name, value));
    }
    out.push_str("\nBuilders:\n\n");
    for build in &plan.builds {
        out.push_str(&format!("  {:<20} {}\n", build.name, build.builder_type));
        // Which local disk stands in for a googlecompute source image: the
        // image map's answer, worth seeing before a build downloads it.
        if let (Some(gce), Some(source)) = (&build.gce, build.qemu.iso_urls.first()) {
            out.push_str(&format!(
                "  {:<20} source {} = {}\n",
                "", gce.instance.image, source
            ));
        }
    }
    for skipped in &plan.skipped {
        out.push_str(&format!(
            "  {:<20} {} (skipped: not supported by kiln)\n",
            skipped.name, skipped.builder_type
        ));
    }
    out.push_str("\nProvisioners:\n\n");
    for build in &plan.builds {
        let names: Vec<&str> = build
            .provisioners
            .iter()
            .map(|p| p.type_name.as_str())
            .collect();
        out.push_str(&format!("  {:<20} {}\n", build.name, join_or_none(&names)));
    }
    out.push_str("\nPost-processors:\n\n");
    for build in &plan.builds {
        let chains: Vec<String> = build
            .post_processors
            .iter()
            .map(|chain| {
                chain
                    .iter()
                    .map(PostProcessorSpec::type_name)
                    .collect::<Vec<_>>()
                    .join(" -> ")
            })
            .collect();
        let chains: Vec<&str> = chains.iter().map(String::as_str).collect();
        out.push_str(&format!("  {:<20} {}\n", build.name, join_or_none(&chains)));
    }
    out
}

fn join_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "<none>".to_string()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{Overrides, load};

    /// What `kiln inspect` prints for `template`, with one qemu builder.
    fn inspected(mut template: serde_json::Value) -> String {
        template["builders"] = serde_json::json!([{
            "type": "qemu",
            "iso_url": "base.qcow2",
            "iso_checksum": "none",
            "disk_image": true,
            "ssh_username": "root"
        }]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(&path, template.to_string()).unwrap();
        render(&load(&path, &Overrides::default()).unwrap())
    }

    #[test]
    fn values_derived_from_a_secret_are_masked() {
        let out = inspected(serde_json::json!({
            "variables": {
                "password": "pa\"ss\nw0rd-line",
                "url": "https://user:{{user `password`}}@example.com/",
                "plain": "visible"
            },
            "sensitive-variables": ["password"]
        }));
        assert!(
            !out.contains("pa\"ss") && !out.contains("w0rd-line"),
            "{out}"
        );
        assert!(out.contains("password = <sensitive>"), "{out}");
        assert!(
            out.contains("url = https://user:<sensitive>@example.com/"),
            "{out}"
        );
        assert!(out.contains("plain = visible"), "{out}");
    }

    #[test]
    fn machine_records_list_the_template_masked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let template = serde_json::json!({
            "variables": {"password": "hunter2", "region": "eu", "size": null},
            "sensitive-variables": ["password"],
            "builders": [{
                "type": "qemu",
                "name": "base",
                "iso_url": "base.qcow2",
                "iso_checksum": "none",
                "disk_image": true,
                "ssh_username": "root"
            }],
            "provisioners": [{"type": "shell", "inline": ["echo {{user `password`}}"]}],
            "post-processors": [{"type": "checksum"}]
        });
        std::fs::write(&path, template.to_string()).unwrap();
        let overrides = Overrides {
            entries: vec![crate::template::Override::Var("size".into(), "1".into())],
            ..Default::default()
        };
        let plan = load(&path, &overrides).unwrap();
        let records = records(&plan);
        let has = |target: &str, fields: &[&str]| {
            records.iter().any(|(t, f)| {
                t == target && f.iter().map(String::as_str).eq(fields.iter().copied())
            })
        };
        assert!(
            has("", &["template-variable", "password", MASK, "0"]),
            "{records:?}"
        );
        assert!(
            has("", &["template-variable", "region", "eu", "0"]),
            "{records:?}"
        );
        assert!(
            has("", &["template-variable", "size", "1", "1"]),
            "{records:?}"
        );
        assert!(
            has("", &["template-builder", "base", "qemu"]),
            "{records:?}"
        );
        assert!(
            has("base", &["template-provisioner", "shell"]),
            "{records:?}"
        );
        assert!(
            has("base", &["template-post-processor", "checksum"]),
            "{records:?}"
        );
        assert!(!format!("{records:?}").contains("hunter2"));
    }

    #[test]
    fn skipped_builders_are_listed_as_packer_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let template = serde_json::json!({"builders": [
            {"type": "qemu", "iso_url": "b.qcow2", "iso_checksum": "none", "disk_image": true,
             "ssh_username": "root"},
            {"type": "vmware-iso", "name": "vm", "anything": ["goes"]}
        ]});
        std::fs::write(&path, template.to_string()).unwrap();
        let plan = load(&path, &Overrides::default()).unwrap();
        assert!(
            records(&plan)
                .iter()
                .any(|(t, f)| t.is_empty() && f == &["template-builder", "vm", "vmware-iso"]),
            "{:?}",
            records(&plan)
        );
        let text = render(&plan);
        assert!(
            text.contains("  vm                   vmware-iso (skipped: not supported by kiln)\n"),
            "{text}"
        );
    }

    #[test]
    fn control_characters_from_the_template_are_escaped() {
        let out = inspected(serde_json::json!({
            "description": "title\u{1b}]0;owned\u{7}",
            "variables": {"colour": "\u{1b}[31mred"}
        }));
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
        assert!(out.contains("title\\u{1b}]0;owned\\u{7}"), "{out}");
        assert!(out.contains("colour = \\u{1b}[31mred"), "{out}");
    }
}
