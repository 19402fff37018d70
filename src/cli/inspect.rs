//! `kiln inspect`: what a template holds, with secrets masked.

use super::args::TemplateArgs;
use super::redact::MASK;
use crate::template::{self, PostProcessorSpec};

pub fn run(args: &TemplateArgs) -> anyhow::Result<()> {
    let overrides = super::overrides(args)?;
    let plan = template::load(&args.template, &overrides)?;
    print!("{}", render(&plan));
    Ok(())
}

fn render(plan: &template::Plan) -> String {
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
