//! The `googlecompute` builder's options, as Packer 1.6.6 decodes and
//! validates them, mapped onto the local QEMU machine that emulates the
//! instance and onto the image the build publishes.
//!
//! Every option Packer 1.6.6 accepts is accepted. Those with no meaning on
//! a local machine (networking, scheduling, accelerators, IAP, ...) are
//! validated as Packer does and listed in [`GceBuild::not_applied`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value as Json;
use sha2::{Digest as _, Sha256};

use super::decode::{Obj, json_type};
use super::gce_shapes::{self, Host};
use super::paths;
use crate::plan::{DiskFormat, GceBuild, GceImage, GceInstance, QemuConfig};
use crate::source::image_map::{ImageMap, Wanted};

/// Packer's `disk_size`, in GB.
const DISK_SIZE_GB: i64 = 20;
/// Packer's `machine_type`.
const MACHINE_TYPE: &str = "n1-standard-1";
/// Packer's `state_timeout`.
const STATE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Packer's `network` when neither it nor `subnetwork` is set.
const NETWORK: &str = "default";
/// Packer's `image_description`.
const IMAGE_DESCRIPTION: &str = "Created by Packer";
/// Packer's `scopes`.
const SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/compute",
    "https://www.googleapis.com/auth/devstorage.full_control",
];
/// The metadata key of the startup script.
const STARTUP_SCRIPT: &str = "startup-script";
/// Compute Engine's rule for image and family names.
const NAME_RULE: &str = "The first character must be a lowercase letter, and all following \
     characters must be a dash, lowercase letter, or digit, except the last character, which \
     cannot be a dash";

/// The kinds of value an option accepted without being applied takes.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Int,
    Duration,
    List,
}

/// Packer 1.6.6 options with no local meaning: type-checked, and named in
/// the build's "not applied locally" line when set to something other
/// than their zero value. (`network`, `on_host_maintenance`, the
/// accelerators and `use_internal_ip`/`omit_external_ip` are read
/// separately: Packer's rules tie them together.)
const NOT_APPLIED: &[(&str, Kind)] = &[
    ("address", Kind::Str),
    ("disk_name", Kind::Str),
    ("disk_type", Kind::Str),
    ("enable_secure_boot", Kind::Bool),
    ("enable_vtpm", Kind::Bool),
    ("enable_integrity_monitoring", Kind::Bool),
    ("use_iap", Kind::Bool),
    ("iap_localhost_port", Kind::Int),
    ("iap_hashbang", Kind::Str),
    ("iap_ext", Kind::Str),
    ("iap_tunnel_launch_wait", Kind::Int),
    ("impersonate_service_account", Kind::Str),
    ("min_cpu_platform", Kind::Str),
    ("network_project_id", Kind::Str),
    ("region", Kind::Str),
    ("subnetwork", Kind::Str),
    ("tags", Kind::List),
    ("use_os_login", Kind::Bool),
    ("vault_gcp_oauth_engine", Kind::Str),
    ("wait_to_add_ssh_keys", Kind::Duration),
    ("wrap_startup_script", Kind::Str),
];

/// What decoding a `googlecompute` builder gives beside its problems.
pub(super) struct Decoded {
    pub qemu: QemuConfig,
    pub gce: GceBuild,
    /// Lines worth a warning (the "not applied locally" list, a capped
    /// machine type).
    pub warnings: Vec<String>,
}

/// Decodes one builder object whose `type` is `googlecompute`.
pub(super) fn decode(
    mut o: Obj<'_>,
    build_name: &str,
    cwd: &Path,
    images: Option<&ImageMap>,
    host: Host,
) -> Option<Decoded> {
    let cx = o.cx();
    o.allow(&["type", "name"]);
    let mut not_applied = Vec::new();

    let project_id = o.non_empty_string("project_id");
    if project_id.is_none() {
        o.missing("project_id", "the project the instance and image belong to");
    }
    let zone = o.non_empty_string("zone");
    if zone.is_none() {
        o.missing(
            "zone",
            "the zone the instance runs in, such as us-central1-a",
        );
    }
    let account_file = o
        .non_empty_string("account_file")
        .map(|p| paths::resolve(cwd, &p));
    if let Some(path) = &account_file
        && !path.is_file()
    {
        cx.problem(
            o.key_path("account_file"),
            format!("account_file path does not exist: {}", path.display()),
        );
    }
    if account_file.is_some()
        && o.has("vault_gcp_oauth_engine")
        && o.has("impersonate_service_account")
    {
        cx.problem(
            o.key_path("account_file"),
            "You cannot specify impersonate_service_account, account_file and \
             vault_gcp_oauth_engine at the same time",
        );
    }

    let source = source(&mut o, cwd, images);
    let image = image(&mut o, cwd);
    let machine_type = o
        .non_empty_string("machine_type")
        .unwrap_or_else(|| MACHINE_TYPE.into());
    let shape = gce_shapes::shape(&machine_type)
        .map_err(|e| cx.problem(o.key_path("machine_type"), e))
        .ok();
    let disk_size_gb = o
        .int("disk_size", 0, i64::from(u32::MAX))
        .filter(|n| *n > 0)
        .unwrap_or(DISK_SIZE_GB);
    let state_timeout = o
        .duration("state_timeout")
        .filter(|d| !d.is_zero())
        .unwrap_or(STATE_TIMEOUT);
    let instance_name = o.non_empty_string("instance_name");
    let labels = o.string_map("labels").unwrap_or_default();
    let tags = o.string_list("tags").unwrap_or_default();
    let mut attributes = o.string_map("metadata").unwrap_or_default();
    metadata_files(&mut o, cwd, &mut attributes);
    let startup_script = startup_script(&mut o, cwd, &mut attributes);
    let network = o.string("network").unwrap_or_default();
    let subnetwork = o.non_empty_string("subnetwork");
    if !network.is_empty() && network != NETWORK {
        not_applied.push("network".to_string());
    }
    let network = if network.is_empty() && subnetwork.is_none() {
        NETWORK.to_string()
    } else {
        network
    };
    let service = service_account(&mut o);
    scheduling(&mut o, &mut not_applied);
    not_applied.extend(check_kinds(&mut o, NOT_APPLIED));
    if o.bool("use_iap").unwrap_or(false) && o.string("communicator").as_deref() == Some("none") {
        cx.problem(
            o.key_path("use_iap"),
            "IAP tunnel is not implemented for none communicator",
        );
    }
    if o.bool("enable_integrity_monitoring").unwrap_or(false)
        && !o.bool("enable_vtpm").unwrap_or(false)
    {
        cx.problem(
            o.key_path("enable_integrity_monitoring"),
            "You cannot enable Integrity Monitoring when vTPM is disabled.",
        );
    }
    let skip_create_image = o.bool("skip_create_image").unwrap_or(false);
    if o.has("image_encryption_key") {
        image_encryption_key(&mut o);
        not_applied.push("image_encryption_key".to_string());
    }
    let communicator = super::communicator::decode(&mut o, cwd);
    o.finish();

    let project_id = project_id?;
    let image = image?;
    let (location, checksum, source_image) = source?;
    let (cpus, memory_mib, cap_note) = {
        let (capped, note) = gce_shapes::cap(&machine_type, shape?, host);
        (capped.cpus, capped.memory_mib, note)
    };
    let communicator = communicator?;
    let ssh_username = match &communicator {
        crate::plan::Communicator::Ssh(ssh) => ssh.username.clone(),
        crate::plan::Communicator::None => String::new(),
    };

    let mut qemu = QemuConfig::for_build(build_name);
    let output_directory = crate::plan::defaults::output_directory(build_name);
    qemu.output_directory = paths::resolve(cwd, &output_directory);
    qemu.output_directory_shown = output_directory.into();
    qemu.iso_urls = vec![location];
    qemu.iso_checksum = checksum;
    qemu.disk_image = true;
    qemu.disk_size_mib = u64::try_from(disk_size_gb).unwrap_or(20) * 1024;
    qemu.format = DiskFormat::Qcow2;
    qemu.cpus = cpus;
    qemu.memory_mib = memory_mib;
    qemu.headless = true;
    qemu.vm_name = format!("{}.qcow2", image.name);
    // No shutdown_command: Compute Engine stops an instance as the ACPI
    // power button does, and kiln presses it.
    qemu.shutdown_command = None;
    qemu.communicator = communicator;

    let zone = zone?;
    let instance_name =
        instance_name.unwrap_or_else(|| default_instance_name(build_name, &project_id, &zone));
    let instance = GceInstance {
        numeric_project_id: numeric_id(&project_id, 100_000_000_000, 999_999_999_999),
        id: numeric_id(&instance_name, 1_000_000_000_000_000_000, u64::MAX),
        project_id: project_id.clone(),
        zone,
        name: instance_name,
        machine_type: machine_type.clone(),
        image: source_image,
        tags,
        labels,
        attributes,
        network,
        subnetwork,
        service_account_email: service.email,
        no_service_account: service.disabled,
        scopes: service.scopes,
        ssh_username,
    };
    let gce_image = GceImage {
        project_id,
        account_file,
        ..image
    };
    let mut warnings = Vec::new();
    if let Some(note) = cap_note {
        warnings.push(format!("{}: {note}", o_path(build_name)));
    }
    if !not_applied.is_empty() {
        warnings.push(format!(
            "{}: googlecompute options not applied locally: {}",
            o_path(build_name),
            not_applied.join(", ")
        ));
    }
    Some(Decoded {
        qemu,
        gce: GceBuild {
            instance,
            image: gce_image,
            startup_script,
            state_timeout,
            not_applied,
            skip_create_image,
        },
        warnings,
    })
}

/// How a warning names its build.
fn o_path(build_name: &str) -> String {
    format!("build {build_name:?}")
}

/// A stable number in `low..=high` for `text`: GCE's numeric ids, derived
/// so that the same project or instance name always gets the same one.
/// `packer-<uuid>` as Packer names the instance, but the same for every
/// run of the build: the name is what the guest sees (its hostname, the
/// metadata server's `name` and `id`), so a fresh one per run would make
/// every `-cache` rebuild boot again, and a local instance never meets
/// another one it must not be confused with.
fn default_instance_name(build_name: &str, project_id: &str, zone: &str) -> String {
    let digest = Sha256::digest(format!("kiln-instance/{build_name}/{project_id}/{zone}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    format!(
        "packer-{}",
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    )
}

fn numeric_id(text: &str, low: u64, high: u64) -> u64 {
    let digest = Sha256::digest(text.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let n = u64::from_be_bytes(bytes);
    low + n % (high - low)
}

/// `source_image` / `source_image_family` / `source_image_project_id`:
/// the mapped disk, its checksum, and the image as GCE names it.
fn source(
    o: &mut Obj<'_>,
    _cwd: &Path,
    images: Option<&ImageMap>,
) -> Option<(crate::plan::Location, crate::plan::Checksum, String)> {
    let image = o.non_empty_string("source_image");
    let family = o.non_empty_string("source_image_family");
    let projects = o.string_list("source_image_project_id").unwrap_or_default();
    if image.is_none() && family.is_none() {
        o.missing(
            "source_image",
            "a source_image or source_image_family must be specified",
        );
        return None;
    }
    // A bad map file or -source-image is reported once, by the caller.
    let images = images?;
    let wanted = Wanted {
        image: image.as_deref(),
        family: family.as_deref(),
        projects: &projects,
    };
    let key = if image.is_some() {
        "source_image"
    } else {
        "source_image_family"
    };
    match images.resolve(&wanted) {
        Ok(mapped) => {
            let project = projects
                .first()
                .cloned()
                .or(mapped.project)
                .unwrap_or_else(|| "unknown".into());
            let name = match (&image, &family) {
                (Some(i), _) => format!("projects/{project}/global/images/{i}"),
                (None, Some(f)) => format!("projects/{project}/global/images/family/{f}"),
                (None, None) => unreachable!("checked above"),
            };
            Some((mapped.location, mapped.checksum, name))
        }
        Err(e) => {
            o.cx().problem(o.key_path(key), e);
            None
        }
    }
}

/// The image options; `None` if one has a problem.
fn image(o: &mut Obj<'_>, _cwd: &Path) -> Option<GceImage> {
    let cx = o.cx();
    let mut ok = true;
    let name = match o.non_empty_string("image_name") {
        Some(n) => Some(n),
        None => cx.render(&o.key_path("image_name"), "packer-{{timestamp}}"),
    };
    if let Some(n) = &name
        && let Err(e) = check_name("name", n)
    {
        cx.problem(o.key_path("image_name"), e);
        ok = false;
    }
    let family = o.non_empty_string("image_family");
    if let Some(f) = &family
        && let Err(e) = check_name("family", f)
    {
        cx.problem(o.key_path("image_family"), e);
        ok = false;
    }
    let description = o
        .non_empty_string("image_description")
        .unwrap_or_else(|| IMAGE_DESCRIPTION.into());
    let labels = o.string_map("image_labels").unwrap_or_default();
    let licenses = o.string_list("image_licenses").unwrap_or_default();
    // Not a Packer 1.6.6 option: packer-plugin-googlecompute's, which
    // `googlecompute-import` takes too.
    let guest_os_features = o.string_list("image_guest_os_features").unwrap_or_default();
    let storage_locations = o.string_list("image_storage_locations").unwrap_or_default();
    if storage_locations.len() > 1 {
        cx.problem(
            o.key_path("image_storage_locations"),
            "Invalid image storage locations: Must not have more than 1 region",
        );
        ok = false;
    }
    let name = name?;
    ok.then(|| GceImage {
        name,
        family,
        description: Some(description),
        labels,
        licenses,
        guest_os_features,
        storage_locations,
        ..GceImage::default()
    })
}

/// Packer's rule for `image_name` and `image_family` (`what`).
fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!(
            "Invalid image {what}: Must not be longer than 63 characters"
        ));
    }
    let bytes = name.as_bytes();
    let first_ok = bytes.first().is_some_and(u8::is_ascii_lowercase);
    let middle_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let last_ok = bytes.last().is_some_and(|b| *b != b'-');
    if first_ok && middle_ok && last_ok {
        Ok(())
    } else {
        Err(format!("Invalid image {what} {name:?}: {NAME_RULE}"))
    }
}

/// `metadata_files`: each key's value is the content of the file named.
fn metadata_files(o: &mut Obj<'_>, cwd: &Path, attributes: &mut BTreeMap<String, String>) {
    let Some(files) = o.string_map("metadata_files") else {
        return;
    };
    for (key, file) in files {
        let path = paths::resolve(cwd, &file);
        match std::fs::read_to_string(&path) {
            Ok(content) => {
                attributes.insert(key, content);
            }
            Err(e) => o.cx().problem(
                format!(
                    "{}.{}",
                    o.key_path("metadata_files"),
                    super::decode::key_name(&key)
                ),
                format!("cannot read {}: {e}", path.display()),
            ),
        }
    }
}

/// `startup_script_file` (read now), else the `startup-script` metadata
/// key: the script kiln runs before the provisioners. The file's content
/// also becomes the instance's `startup-script` attribute, as Packer puts
/// it in the metadata.
fn startup_script(
    o: &mut Obj<'_>,
    cwd: &Path,
    attributes: &mut BTreeMap<String, String>,
) -> Option<String> {
    if let Some(file) = o.non_empty_string("startup_script_file") {
        let path = paths::resolve(cwd, &file);
        match std::fs::read_to_string(&path) {
            Ok(content) => {
                attributes.insert(STARTUP_SCRIPT.into(), content.clone());
                return Some(content);
            }
            Err(e) => {
                o.cx().problem(
                    o.key_path("startup_script_file"),
                    format!("startup_script_file: cannot read {}: {e}", path.display()),
                );
                return None;
            }
        }
    }
    attributes
        .get(STARTUP_SCRIPT)
        .filter(|s| !s.is_empty())
        .cloned()
}

struct ServiceAccount {
    email: Option<String>,
    disabled: bool,
    scopes: Vec<String>,
}

/// `service_account_email`, `disable_default_service_account`, `scopes`:
/// emulated by the metadata server.
fn service_account(o: &mut Obj<'_>) -> ServiceAccount {
    let email = o.non_empty_string("service_account_email");
    let disabled = o.bool("disable_default_service_account").unwrap_or(false);
    if disabled && email.is_some() {
        o.cx().problem(
            o.key_path("service_account_email"),
            "you may not specify a 'service_account_email' when \
             'disable_default_service_account' is true",
        );
    }
    // Packer keeps an empty list as given: only a missing one gets the
    // default.
    let scopes = o
        .string_list("scopes")
        .unwrap_or_else(|| SCOPES.iter().map(|s| (*s).to_string()).collect());
    ServiceAccount {
        email,
        disabled,
        scopes,
    }
}

/// `preemptible`, `on_host_maintenance`, the accelerators and the external
/// IP options, with Packer's rules between them.
fn scheduling(o: &mut Obj<'_>, not_applied: &mut Vec<String>) {
    let cx = o.cx();
    let preemptible = o.bool("preemptible").unwrap_or(false);
    let given = o.string("on_host_maintenance").unwrap_or_default();
    if given == "MIGRATE" && preemptible {
        cx.problem(
            o.key_path("on_host_maintenance"),
            "on_host_maintenance must be TERMINATE when using preemptible instances.",
        );
    }
    let maintenance = if preemptible {
        "TERMINATE".to_string()
    } else if given.is_empty() {
        "MIGRATE".to_string()
    } else {
        given.clone()
    };
    if maintenance != "MIGRATE" && maintenance != "TERMINATE" {
        cx.problem(
            o.key_path("on_host_maintenance"),
            "on_host_maintenance must be one of MIGRATE or TERMINATE.",
        );
    }
    let accelerator_type = o.string("accelerator_type").unwrap_or_default();
    let accelerator_count = o.int("accelerator_count", 0, i64::MAX).unwrap_or(0);
    if accelerator_count > 0 && accelerator_type.is_empty() {
        cx.problem(
            o.key_path("accelerator_type"),
            "'accelerator_type' must be set when 'accelerator_count' is more than 0",
        );
    }
    if accelerator_count > 0 && maintenance != "TERMINATE" {
        cx.problem(
            o.key_path("on_host_maintenance"),
            "'on_host_maintenance' must be set to 'TERMINATE' when 'accelerator_count' is more than 0",
        );
    }
    let omit_external_ip = o.bool("omit_external_ip").unwrap_or(false);
    let use_internal_ip = o.bool("use_internal_ip").unwrap_or(false);
    if omit_external_ip && o.string("address").is_some_and(|a| !a.is_empty()) {
        cx.problem(
            o.key_path("address"),
            "you can not specify an external address when 'omit_external_ip' is true",
        );
    }
    if omit_external_ip && !use_internal_ip {
        cx.problem(
            o.key_path("use_internal_ip"),
            "'use_internal_ip' must be true if 'omit_external_ip' is true",
        );
    }
    for (name, set) in [
        ("use_internal_ip", use_internal_ip),
        ("omit_external_ip", omit_external_ip),
        ("preemptible", preemptible),
        ("on_host_maintenance", !given.is_empty()),
        ("accelerator_type", !accelerator_type.is_empty()),
        ("accelerator_count", accelerator_count > 0),
    ] {
        if set {
            not_applied.push(name.to_string());
        }
    }
}

/// `image_encryption_key`: `{"kmsKeyName": ..., "rawKey": ...}`.
fn image_encryption_key(o: &mut Obj<'_>) {
    let path = o.key_path("image_encryption_key");
    let Some(v) = o.raw("image_encryption_key") else {
        return;
    };
    let Json::Object(map) = v else {
        o.cx().problem(
            path,
            format!(
                "expected an object with kmsKeyName or rawKey, got {}",
                json_type(v)
            ),
        );
        return;
    };
    let mut key = Obj::new(o.cx(), path, map);
    let _ = key.string("kmsKeyName");
    let _ = key.string("rawKey");
    key.finish();
}

/// Checks the type of each of `keys` that is set; returns the names of
/// those set to something other than their zero value.
fn check_kinds(o: &mut Obj<'_>, keys: &[(&'static str, Kind)]) -> Vec<String> {
    let mut set = Vec::new();
    for (key, kind) in keys {
        let meaningful = match kind {
            Kind::Str => o.string(key).is_some_and(|s| !s.is_empty()),
            Kind::Bool => o.bool(key).unwrap_or(false),
            Kind::Int => o.int(key, i64::MIN, i64::MAX).is_some_and(|n| n != 0),
            Kind::Duration => o.duration(key).is_some_and(|d| !d.is_zero()),
            Kind::List => o.string_list(key).is_some_and(|l| !l.is_empty()),
        };
        if meaningful {
            set.push((*key).to_string());
        }
    }
    set
}

#[cfg(test)]
mod tests;
