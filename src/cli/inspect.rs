//! `kiln inspect`: what a template holds, with secrets masked.

use super::args::TemplateArgs;
use super::redact::{MASK, Redactor};
use crate::plan::{Plan, PostProcessorSpec};

pub fn run(args: &TemplateArgs) -> anyhow::Result<()> {
    let plan = super::load_plan(args)?;
    print!("{}", render(&plan));
    Ok(())
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
