//! Publishing a `googlecompute` build: once the build and its smoke tests
//! pass, its disk goes to the Compute Engine image the template names,
//! through the same upload and `images.insert` as `googlecompute-import`.
//!
//! The Cloud Storage bucket that carries the disk is kiln's to ask for
//! (`-gce-bucket`, `KILN_GCE_BUCKET`): Packer's googlecompute builder makes
//! its image from the instance's disk and has none. A build that would
//! publish without one fails before anything is started.

use std::path::{Path, PathBuf};

use super::gce::{PublishRequest, PublishedImage, Publisher};
use super::report::{Artifact, GCE_BUILDER_ID};
use super::{BuildContext, BuildError, BuildOptions};
use crate::export::{FormatPolicy, ImageFormat};
use crate::gcp::{ImageRequest, ValidationError, validate_image_request};
use crate::plan::{BuildSpec, CompressionLevel, GceBuild, GceImage, Plan};

/// The environment variable naming the staging bucket (`-gce-bucket` wins).
pub const BUCKET_ENV: &str = "KILN_GCE_BUCKET";

/// Why a build cannot publish, known before it starts.
#[derive(Debug, thiserror::Error)]
pub enum PublishSetupError {
    /// Publishing is on and no staging bucket was given.
    #[error(
        "build {build:?} publishes to Compute Engine project {project:?}, which needs a \
         Cloud Storage bucket to stage the disk in: give one with -gce-bucket NAME or \
         {BUCKET_ENV}=NAME, or build with -publish=false to keep the disk locally"
    )]
    NoBucket {
        /// The build.
        build: String,
        /// The image's project.
        project: String,
    },
    /// The image the template names is not one GCE would make.
    #[error("build {build:?}: {source}")]
    Invalid {
        /// The build.
        build: String,
        /// The rules broken.
        #[source]
        source: ValidationError,
    },
}

/// Where a publishing build's image goes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target<'a> {
    pub gce: &'a GceBuild,
    pub bucket: &'a str,
}

/// The publishing target of `spec` under `options`: `None` for a build
/// that does not publish (not googlecompute, or `-publish=false`).
pub(super) fn target<'a>(
    spec: &'a BuildSpec,
    options: &'a BuildOptions,
) -> Result<Option<Target<'a>>, PublishSetupError> {
    let Some(gce) = spec
        .gce
        .as_ref()
        .filter(|gce| options.publish && !gce.skip_create_image)
    else {
        return Ok(None);
    };
    let bucket = options
        .gce_bucket
        .as_deref()
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| PublishSetupError::NoBucket {
            build: spec.name.clone(),
            project: gce.image.project_id.clone(),
        })?;
    validate_image_request(&image_request(&gce.image, bucket)).map_err(|source| {
        PublishSetupError::Invalid {
            build: spec.name.clone(),
            source,
        }
    })?;
    Ok(Some(Target { gce, bucket }))
}

/// Every selected build that would publish can: called before any build
/// starts, so a missing bucket wastes no boot.
pub fn check_publishing(plan: &Plan, options: &BuildOptions) -> Result<(), PublishSetupError> {
    for spec in plan
        .builds
        .iter()
        .filter(|b| options.selection.includes(&b.name))
    {
        target(spec, options)?;
    }
    Ok(())
}

/// The staging object: named after the image, so two builds publishing
/// different images never share one.
fn object_name(image: &GceImage) -> String {
    format!("kiln-{}.tar.gz", image.name)
}

/// The image the template names, staged in `bucket`.
fn image_request(image: &GceImage, bucket: &str) -> ImageRequest {
    let mut request =
        ImageRequest::new(&image.project_id, &image.name, bucket, &object_name(image));
    request.family = image.family.clone();
    request.description = image.description.clone();
    request.labels = image.labels.clone();
    request.licenses = image.licenses.clone();
    request.guest_os_features = image.guest_os_features.clone();
    request.storage_locations = image.storage_locations.clone();
    request
}

/// The request that publishes `disk` to `target`'s image. The image's
/// creation is waited on for `state_timeout`, as Packer's googlecompute
/// waits, but never less than an import's default: GCE takes longer to
/// make an image from a tarball than from a disk.
fn publish_request(
    target: Target<'_>,
    disk: &Path,
    format: ImageFormat,
    force: bool,
) -> PublishRequest {
    PublishRequest {
        disk: disk.to_path_buf(),
        format: FormatPolicy::Known(format),
        image: image_request(&target.gce.image, target.bucket),
        account_file: target.gce.image.account_file.clone(),
        impersonate_service_account: None,
        level: CompressionLevel::DEFAULT,
        skip_clean: false,
        create_timeout: target
            .gce
            .state_timeout
            .max(crate::plan::defaults::IMAGE_CREATE_TIMEOUT),
        force,
        compute_endpoint: None,
    }
}

/// The way of the tested disk to `target`'s image, announced: the upload
/// and the image's creation are the caller's to run (the upload beside the
/// smoke tests, the image once they passed).
pub(super) fn publisher(
    ctx: &BuildContext,
    target: Target<'_>,
    disk: &Path,
    format: ImageFormat,
    force: bool,
) -> Result<Publisher, BuildError> {
    let request = publish_request(target, disk, format, force);
    ctx.say(&format!(
        "Publishing image {} to project {} (staged in gs://{})...",
        request.image.name, request.image.project, request.image.bucket
    ));
    Publisher::new(request).map_err(|err| BuildError::Publish(Box::new(err)))
}

/// Packer's googlecompute artifact: id the image's name, no files.
pub(super) fn image_artifact(spec: &BuildSpec, image: &PublishedImage) -> Artifact {
    Artifact {
        build_name: spec.name.clone(),
        builder_type: spec.builder_type.clone(),
        builder_id: GCE_BUILDER_ID.to_string(),
        id: Some(image.name.clone()),
        description: format!("A disk image was created: {}", image.name),
        files: Vec::<PathBuf>::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{OnError, Selection};
    use crate::plan::{GceInstance, QemuConfig};
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn gce_spec(name: &str) -> BuildSpec {
        BuildSpec {
            name: name.into(),
            builder_type: "googlecompute".into(),
            qemu: QemuConfig::default(),
            gce: Some(GceBuild {
                instance: GceInstance::default(),
                image: GceImage {
                    project_id: "acme-images".into(),
                    account_file: None,
                    name: "base-20260101".into(),
                    family: Some("base".into()),
                    description: Some("Base image".into()),
                    labels: BTreeMap::from([("team".into(), "infra".into())]),
                    licenses: vec!["projects/acme-images/global/licenses/internal".into()],
                    guest_os_features: vec!["GVNIC".into()],
                    storage_locations: vec!["eu".into()],
                },
                startup_script: None,
                state_timeout: Duration::from_secs(300),
                not_applied: Vec::new(),
                skip_create_image: false,
            }),
            provisioners: Vec::new(),
            post_processors: Vec::new(),
            tests: Vec::new(),
        }
    }

    fn qemu_spec(name: &str) -> BuildSpec {
        BuildSpec {
            builder_type: "qemu".into(),
            gce: None,
            ..gce_spec(name)
        }
    }

    fn options(publish: bool, bucket: Option<&str>) -> BuildOptions {
        BuildOptions {
            force: false,
            on_error: OnError::Cleanup,
            debug: false,
            parallel: 0,
            selection: Selection::default(),
            test_report: None,
            many_builds: false,
            redactor: crate::redact::Redactor::default(),
            publish,
            gce_bucket: bucket.map(str::to_string),
            cache: false,
        }
    }

    fn plan(builds: Vec<BuildSpec>) -> Plan {
        Plan {
            description: None,
            builds,
            sensitive_values: Vec::new(),
            variables: Vec::new(),
            warnings: Vec::new(),
            skipped: Vec::new(),
        }
    }

    #[test]
    fn a_publishing_build_without_a_bucket_is_refused_by_name() {
        let plan = plan(vec![qemu_spec("local"), gce_spec("gce-base")]);
        let err = check_publishing(&plan, &options(true, None)).unwrap_err();
        let text = err.to_string();
        for part in [
            "\"gce-base\"",
            "\"acme-images\"",
            "-gce-bucket",
            BUCKET_ENV,
            "-publish=false",
        ] {
            assert!(text.contains(part), "{part:?} missing from: {text}");
        }
        // A blank bucket is no bucket.
        assert!(check_publishing(&plan, &options(true, Some(" "))).is_err());
    }

    #[test]
    fn no_bucket_is_needed_when_nothing_publishes() {
        let gce = plan(vec![qemu_spec("local"), gce_spec("gce-base")]);
        check_publishing(&gce, &options(false, None)).unwrap();
        check_publishing(&plan(vec![qemu_spec("local")]), &options(true, None)).unwrap();
        // A googlecompute build left out by -except needs none either.
        let mut except = options(true, None);
        except.selection = Selection::new(&[], &["gce-base".to_string()]);
        check_publishing(&gce, &except).unwrap();
        check_publishing(&gce, &options(true, Some("staging"))).unwrap();
        // skip_create_image publishes nothing either, as in Packer.
        let mut skip = gce_spec("gce-base");
        if let Some(gce) = skip.gce.as_mut() {
            gce.skip_create_image = true;
        }
        let skip = plan(vec![skip]);
        check_publishing(&skip, &options(true, None)).unwrap();
    }

    #[test]
    fn an_image_gce_would_refuse_is_refused_before_the_build() {
        let mut spec = gce_spec("gce-base");
        if let Some(gce) = spec.gce.as_mut() {
            gce.image.licenses = vec!["enable-vmx".into()];
        }
        let err = check_publishing(&plan(vec![spec]), &options(true, Some("staging")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"gce-base\""), "{err}");
        assert!(err.contains("\"enable-vmx\""), "{err}");
    }

    #[test]
    fn the_request_carries_every_image_setting() {
        let spec = gce_spec("gce-base");
        let opts = options(true, Some("staging"));
        let target = target(&spec, &opts).unwrap().expect("publishes");
        let request = publish_request(target, Path::new("/w/d.qcow2"), ImageFormat::Qcow2, true);
        let image = &request.image;
        assert_eq!(
            (image.project.as_str(), image.name.as_str()),
            ("acme-images", "base-20260101")
        );
        assert_eq!(
            (image.bucket.as_str(), image.object.as_str()),
            ("staging", "kiln-base-20260101.tar.gz")
        );
        assert_eq!(image.family.as_deref(), Some("base"));
        assert_eq!(image.description.as_deref(), Some("Base image"));
        assert_eq!(image.labels["team"], "infra");
        assert_eq!(
            image.licenses,
            ["projects/acme-images/global/licenses/internal"]
        );
        assert_eq!(image.guest_os_features, ["GVNIC"]);
        assert_eq!(image.storage_locations, ["eu"]);
        assert!(request.force && !request.skip_clean);
        assert_eq!(request.account_file, None);
        // Never shorter than an import may take.
        assert_eq!(
            request.create_timeout,
            crate::plan::defaults::IMAGE_CREATE_TIMEOUT
        );
    }

    #[test]
    fn the_artifact_is_packers_googlecompute_image() {
        let artifact = image_artifact(
            &gce_spec("gce-base"),
            &PublishedImage {
                project: "acme-images".into(),
                name: "base-20260101".into(),
                id: "123".into(),
                self_link: "https://www.googleapis.com/compute/v1/projects/acme-images/global/images/base-20260101".into(),
                family: Some("base".into()),
            },
        );
        assert_eq!(artifact.builder_id, "packer.googlecompute");
        assert_eq!(artifact.id(), "base-20260101");
        assert_eq!(
            artifact.description,
            "A disk image was created: base-20260101"
        );
        assert!(artifact.files.is_empty());
        assert_eq!(artifact.builder_type, "googlecompute");
    }
}
