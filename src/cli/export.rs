//! `kiln export DISK`: the GCE tarball of any qcow2 or raw disk, to a file
//! or published as a Compute Engine image.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;

use super::args::{ExportArgs, OutputFormat};
use super::exit;
use super::session::Session;
use super::ui::Mode;
use crate::export::FormatPolicy;
use crate::gcp::ImageRequest;
use crate::pipeline::{self, PackageRequest, PackagedFile, PublishRequest, PublishedImage};
use crate::plan::CompressionLevel;

/// What `export` reports as, in the output.
const NAME: &str = "export";

/// `kiln export`: packages a disk into a GCE tarball, or publishes it as
/// an image with `--bucket`.
pub(super) async fn run(args: ExportArgs, machine_readable: bool) -> ExitCode {
    let json = args.format == OutputFormat::Json;
    // With --format=json, stdout holds the one object and nothing else.
    let mode = if machine_readable {
        Mode::Machine
    } else {
        super::output_mode(false)
    };
    let out: Box<dyn std::io::Write + Send> = if json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let session = Session::start(mode, false, out);
    // Wrong arguments stop the export before anything is written.
    let target = match target(&args) {
        Ok(target) => target,
        Err(err) => return session.usage_error(err.as_ref()),
    };
    let (reporter, cancel) = (session.reporter(), session.cancel());
    let result = match &target {
        Target::File(request) => {
            reporter.say(
                NAME,
                &format!(
                    "Packaging {} as {} (GCE disk.raw tarball, level {})...",
                    request.disk.display(),
                    request.output.display(),
                    request.level
                ),
            );
            let started = Instant::now();
            let packaged = session
                .run(pipeline::package_disk(request, reporter.clone(), cancel))
                .await;
            packaged
                .map(|file| {
                    reporter.say(NAME, &wrote(&file, started));
                    Done::File(file)
                })
                .map_err(anyhow::Error::from)
        }
        Target::Image(request) => session
            .run(pipeline::publish_disk(request, reporter, cancel))
            .await
            .map(Done::Image)
            .map_err(anyhow::Error::from),
    };
    if let Some(code) = session.interrupted() {
        return code;
    }
    match result {
        Ok(done) => {
            print_result(&done, args.format, &session);
            ExitCode::SUCCESS
        }
        Err(err) => session.fail(exit::FAILURE, err.as_ref()),
    }
}

/// Where the tarball goes.
enum Target {
    File(PackageRequest),
    Image(Box<PublishRequest>),
}

/// What an export made.
enum Done {
    File(PackagedFile),
    Image(PublishedImage),
}

fn wrote(file: &PackagedFile, started: Instant) -> String {
    format!(
        "Wrote {} ({:.0} MiB; disk.raw of {} GiB, {:.0} MiB of data) in {:.1}s",
        file.path.display(),
        file.size_bytes as f64 / f64::from(1 << 20),
        file.disk_size_bytes >> 30,
        file.data_bytes as f64 / f64::from(1 << 20),
        started.elapsed().as_secs_f64()
    )
}

/// The result on stdout: one JSON object, or (for an image) its name, id
/// and self link as `key: value` lines; a file's line was said already.
fn print_result(done: &Done, format: OutputFormat, session: &Session) {
    match format {
        OutputFormat::Json => println!("{}", result_json(done)),
        OutputFormat::Text => {
            if let Done::Image(image) = done {
                let ui = session.ui();
                ui.machine(NAME, &["image", "name", &image.name]);
                ui.machine(NAME, &["image", "id", &image.id]);
                ui.machine(NAME, &["image", "self-link", &image.self_link]);
                if ui.mode() != Mode::Machine {
                    println!("name: {}", image.name);
                    println!("id: {}", image.id);
                    println!("selfLink: {}", image.self_link);
                }
            }
        }
    }
}

/// gcloud's field names: `selfLink`, as the API spells them.
fn result_json(done: &Done) -> serde_json::Value {
    match done {
        Done::Image(image) => {
            let mut json = serde_json::json!({
                "kind": "image",
                "project": image.project,
                "name": image.name,
                "id": image.id,
                "selfLink": image.self_link,
            });
            if let Some(family) = &image.family {
                json["family"] = family.clone().into();
            }
            json
        }
        Done::File(file) => serde_json::json!({
            "kind": "file",
            "path": file.path,
            "sizeBytes": file.size_bytes,
            "diskSizeBytes": file.disk_size_bytes,
            "dataBytes": file.data_bytes,
            "sha256": file.sha256,
        }),
    }
}

/// `--level` is read as a plain number so that a wrong one gets kiln's
/// message (and exit code) rather than clap's.
fn level(args: &ExportArgs) -> anyhow::Result<CompressionLevel> {
    CompressionLevel::try_from(args.level).map_err(|_| {
        anyhow::anyhow!(
            "--level {}: expected {} to {}",
            args.level,
            CompressionLevel::MIN,
            CompressionLevel::MAX
        )
    })
}

/// The request the arguments make, checked as far as it can be before
/// anything is written or sent.
fn target(args: &ExportArgs) -> anyhow::Result<Target> {
    let level = level(args)?;
    if std::fs::symlink_metadata(&args.disk).is_err() {
        anyhow::bail!("disk {} not found", args.disk.display());
    }
    // Not a disk, a format kiln must not guess, a bad backing chain: said
    // before anything is written or sent.
    let format = FormatPolicy::from_flag(args.disk_format);
    crate::export::check_image(&args.disk, format)?;
    Ok(match &args.output {
        Some(output) => {
            crate::export::check_output(&args.disk, output, args.force, format)?;
            Target::File(PackageRequest {
                disk: args.disk.clone(),
                format,
                output: output.clone(),
                level,
                force: args.force,
                sha256: args.format == OutputFormat::Json,
            })
        }
        None => {
            let request = PublishRequest {
                disk: args.disk.clone(),
                format,
                image: image_request(args)?,
                account_file: args.account_file.clone(),
                impersonate_service_account: args.impersonate_service_account.clone(),
                level,
                skip_clean: args.skip_clean,
                create_timeout: crate::template::parse_duration(&args.image_create_timeout)
                    .map_err(|e| anyhow::anyhow!("--image-create-timeout: {e}"))?,
                force: args.force,
                compute_endpoint: args.compute_endpoint.clone(),
            };
            // Names and labels GCE would refuse, before a byte is packaged.
            request.check()?;
            Target::Image(Box::new(request))
        }
    })
}

/// The image to create, from the arguments.
fn image_request(args: &ExportArgs) -> anyhow::Result<ImageRequest> {
    let (Some(bucket), Some(image_name)) = (&args.bucket, &args.image_name) else {
        anyhow::bail!("give --output FILE, or --bucket and --image-name to publish to GCE");
    };
    let project =
        crate::gcp::default_project(args.project.as_deref(), args.account_file.as_deref())?;
    let object = args
        .object_name
        .clone()
        .unwrap_or_else(|| format!("kiln-import-{}.tar.gz", chrono::Utc::now().timestamp()));
    let mut request = ImageRequest::new(&project, image_name, bucket, &object);
    request.family = args.family.clone();
    request.description = args.description.clone();
    request.labels = labels(&args.labels)?;
    request.guest_os_features = guest_os_features(&args.guest_os_features)?;
    request.storage_locations = args.storage_locations.clone();
    request.architecture = args.architecture.clone();
    Ok(request)
}

/// `--labels=k=v,k2=v2`, repeated or not; a later value of a key wins, as
/// in gcloud. Keys and values are checked with the rest of the request.
fn labels(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for item in items {
        let (key, value) = item
            .split_once('=')
            .filter(|(key, _)| !key.is_empty())
            .with_context(|| format!("--labels {item:?}: expected KEY=VALUE"))?;
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}

/// `--guest-os-features=A,B`, repeated or not; an empty item is a typo.
fn guest_os_features(items: &[String]) -> anyhow::Result<Vec<String>> {
    if items.iter().any(|item| item.trim().is_empty()) {
        anyhow::bail!("--guest-os-features: an empty feature name (UEFI_COMPATIBLE, GVNIC, ...)");
    }
    Ok(items.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn labels_are_pairs_and_the_last_value_wins() {
        let labels = labels(&strings(&["team=infra", "env=", "team=core"])).unwrap();
        assert_eq!(
            labels,
            BTreeMap::from([
                ("env".to_string(), String::new()),
                ("team".to_string(), "core".to_string()),
            ])
        );
    }

    #[test]
    fn an_empty_or_keyless_label_is_refused_by_name() {
        for bad in ["", "team", "=x"] {
            let err = labels(&strings(&[bad])).unwrap_err().to_string();
            assert!(
                err.contains("--labels") && err.contains("KEY=VALUE"),
                "{err}"
            );
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn an_empty_guest_os_feature_is_refused() {
        assert_eq!(
            guest_os_features(&strings(&["UEFI_COMPATIBLE", "GVNIC"])).unwrap(),
            strings(&["UEFI_COMPATIBLE", "GVNIC"])
        );
        let err = guest_os_features(&strings(&["GVNIC", ""])).unwrap_err();
        assert!(err.to_string().contains("--guest-os-features"), "{err}");
    }

    #[test]
    fn json_names_the_image_as_gcloud_does() {
        let image = PublishedImage {
            project: "p".into(),
            name: "base-1".into(),
            id: "4051912344444444444".into(),
            self_link: "https://compute.example/projects/p/global/images/base-1".into(),
            family: None,
        };
        let json = result_json(&Done::Image(image));
        assert_eq!(json["name"], "base-1");
        assert_eq!(json["id"], "4051912344444444444");
        assert_eq!(
            json["selfLink"],
            "https://compute.example/projects/p/global/images/base-1"
        );
        assert!(json.get("family").is_none(), "{json}");
        let file = PackagedFile {
            path: "out.tar.gz".into(),
            size_bytes: 10,
            disk_size_bytes: 1 << 30,
            data_bytes: 4,
            sha256: Some("ab".into()),
        };
        let json = result_json(&Done::File(file));
        assert_eq!(json["path"], "out.tar.gz");
        assert_eq!(json["sizeBytes"], 10);
        assert_eq!(json["sha256"], "ab");
    }
}
