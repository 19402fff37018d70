//! The `vagrant` post-processor's options, Packer's names and defaults:
//! kiln makes the box of the libvirt provider, the one Packer makes of a
//! qemu build.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::decode::{Obj, json_type};
use super::paths;
use crate::plan::VagrantConfig;
use crate::plan::defaults;

/// The provider a qemu build's box is for.
const PROVIDER: &str = "libvirt";

/// The options that `override.libvirt` may set again.
#[derive(Default)]
struct Fields {
    output: Option<String>,
    compression_level: Option<u32>,
    include: Option<Vec<PathBuf>>,
    vagrantfile_template: Option<PathBuf>,
    vagrantfile_template_generated: Option<bool>,
    keep_input_artifact: Option<bool>,
}

impl Fields {
    fn read(o: &mut Obj<'_>, cwd: &Path) -> Fields {
        Fields {
            output: o.non_empty_string("output"),
            // Go's flate levels: -1 is the default compression.
            compression_level: o
                .int("compression_level", -1, 9)
                .map(|n| u32::try_from(n).unwrap_or(defaults::VAGRANT_COMPRESSION_LEVEL)),
            include: o
                .string_list("include")
                .map(|list| list.iter().map(|p| paths::resolve(cwd, p)).collect()),
            vagrantfile_template: o
                .non_empty_string("vagrantfile_template")
                .map(|p| paths::resolve(cwd, &p)),
            vagrantfile_template_generated: o.bool("vagrantfile_template_generated"),
            keep_input_artifact: o.bool("keep_input_artifact"),
        }
    }

    /// `over`'s options where it sets them, these elsewhere.
    fn overridden_by(self, over: Fields) -> Fields {
        Fields {
            output: over.output.or(self.output),
            compression_level: over.compression_level.or(self.compression_level),
            include: over.include.or(self.include),
            vagrantfile_template: over.vagrantfile_template.or(self.vagrantfile_template),
            vagrantfile_template_generated: over
                .vagrantfile_template_generated
                .or(self.vagrantfile_template_generated),
            keep_input_artifact: over.keep_input_artifact.or(self.keep_input_artifact),
        }
    }
}

/// Decodes a `vagrant` post-processor, `override.libvirt` applied.
pub(super) fn decode(o: &mut Obj<'_>, cwd: &Path) -> Option<VagrantConfig> {
    let mut fields = Fields::read(o, cwd);
    if let Some(provider) = o.non_empty_string("provider_override")
        && provider != PROVIDER
    {
        o.cx().problem(
            o.key_path("provider_override"),
            format!("kiln makes {PROVIDER} boxes of qemu builds, got {provider:?}"),
        );
    }
    match o.raw("override") {
        None => {}
        Some(Json::Object(providers)) => {
            for (name, value) in providers {
                let path = format!("{}.{name}", o.key_path("override"));
                match value {
                    Json::Object(map) if name == PROVIDER => {
                        let mut inner = Obj::new(o.cx(), path, map);
                        let over = Fields::read(&mut inner, cwd);
                        inner.finish();
                        fields = fields.overridden_by(over);
                    }
                    // Other providers' settings apply to other builders'
                    // boxes: Packer ignores them for a qemu build too.
                    Json::Object(_) => {}
                    other => o.cx().problem(
                        path,
                        format!("expected an object, got {}", json_type(other)),
                    ),
                }
            }
        }
        Some(other) => o.cx().problem(
            o.key_path("override"),
            format!(
                "expected an object of provider names, got {}",
                json_type(other)
            ),
        ),
    }
    if let Some(template) = &fields.vagrantfile_template
        && !fields.vagrantfile_template_generated.unwrap_or(false)
        && !template.is_file()
    {
        o.cx().problem(
            o.key_path("vagrantfile_template"),
            format!("file not found: {}", template.display()),
        );
    }
    for (i, file) in fields.include.iter().flatten().enumerate() {
        if !file.is_file() {
            o.cx().problem(
                format!("{}[{i}]", o.key_path("include")),
                format!("file not found: {}", file.display()),
            );
        }
    }
    Some(VagrantConfig {
        output: fields
            .output
            .unwrap_or_else(|| defaults::VAGRANT_OUTPUT.into()),
        compression_level: fields
            .compression_level
            .unwrap_or(defaults::VAGRANT_COMPRESSION_LEVEL),
        include: fields.include.unwrap_or_default(),
        vagrantfile_template: fields.vagrantfile_template,
        keep_input_artifact: fields.keep_input_artifact.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::plan::{Plan, PostProcessorSpec, VagrantConfig};
    use crate::template::{Overrides, TemplateError, load};

    fn load_with(dir: &std::path::Path, pp: serde_json::Value) -> Result<Plan, TemplateError> {
        let template = json!({
            "builders": [{"type": "qemu", "iso_url": "/images/base.qcow2", "iso_checksum": "none", "ssh_username": "root"}],
            "post-processors": [pp],
        });
        let path = dir.join("template.json");
        std::fs::write(&path, template.to_string()).unwrap();
        load(&path, &Overrides::default())
    }

    fn vagrant(plan: &Plan) -> &VagrantConfig {
        match &plan.builds[0].post_processors[0][0] {
            PostProcessorSpec::Vagrant(config) => config,
            other => panic!("not vagrant: {other:?}"),
        }
    }

    fn problems(dir: &std::path::Path, pp: serde_json::Value) -> Vec<(String, String)> {
        match load_with(dir, pp) {
            Err(TemplateError::Invalid { problems, .. }) => {
                problems.into_iter().map(|p| (p.path, p.message)).collect()
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn defaults_are_packers() {
        let dir = tempfile::tempdir().unwrap();
        let plan = load_with(dir.path(), json!("vagrant")).unwrap();
        let config = vagrant(&plan);
        assert_eq!(config.output, "packer_{{ .BuildName }}_{{.Provider}}.box");
        assert_eq!(config.compression_level, 6);
        assert!(config.include.is_empty() && config.vagrantfile_template.is_none());
        assert!(!config.keep_input_artifact);
    }

    #[test]
    fn the_libvirt_override_wins_and_others_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let vf = dir.path().join("Vagrantfile.tpl");
        std::fs::write(&vf, "# custom").unwrap();
        let plan = load_with(
            dir.path(),
            json!({
                "type": "vagrant",
                "compression_level": -1,
                "output": "box/{{.Provider}}.box",
                "vagrantfile_template": vf,
                "override": {
                    "libvirt": {"compression_level": 0, "keep_input_artifact": true},
                    "virtualbox": {"compression_level": 9, "output": "vbox.box"}
                }
            }),
        )
        .unwrap();
        let config = vagrant(&plan);
        assert_eq!(config.compression_level, 0);
        assert_eq!(config.output, "box/{{.Provider}}.box");
        assert_eq!(config.vagrantfile_template.as_deref(), Some(vf.as_path()));
        assert!(config.keep_input_artifact);
    }

    #[test]
    fn bad_levels_missing_files_and_other_providers_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let vf = dir.path().join("missing.tpl");
        assert_eq!(
            problems(
                dir.path(),
                json!({
                    "type": "vagrant",
                    "compression_level": 10,
                    "vagrantfile_template": vf,
                    "provider_override": "virtualbox",
                    "override": {"libvirt": {"outptu": "x"}}
                })
            ),
            [
                (
                    "post-processors[0].compression_level".to_string(),
                    "expected an integer from -1 to 9, got 10".to_string()
                ),
                (
                    "post-processors[0].provider_override".to_string(),
                    "kiln makes libvirt boxes of qemu builds, got \"virtualbox\"".to_string()
                ),
                (
                    "post-processors[0].override.libvirt.outptu".to_string(),
                    "unknown key (did you mean output?)".to_string()
                ),
                (
                    "post-processors[0].vagrantfile_template".to_string(),
                    format!("file not found: {}", vf.display())
                ),
            ]
        );
        // A template another post-processor makes is checked when used.
        let plan = load_with(
            dir.path(),
            json!({"type": "vagrant", "vagrantfile_template": vf, "vagrantfile_template_generated": true}),
        )
        .unwrap();
        assert_eq!(
            vagrant(&plan).vagrantfile_template.as_deref(),
            Some(vf.as_path())
        );
    }
}
