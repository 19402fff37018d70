//! A `googlecompute` build: the GCE instance kiln emulates under QEMU while
//! it builds, and the Compute Engine image it publishes afterwards.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// What a `googlecompute` builder adds to a build beside its QEMU settings
/// (which `template` fills from `machine_type`, `disk_size`, the mapped
/// source image, ...).
#[derive(Debug, Clone)]
pub struct GceBuild {
    /// The instance the guest sees, through the metadata server and SMBIOS.
    pub instance: GceInstance,
    /// The image the result is published as.
    pub image: GceImage,
    /// `startup_script_file`, or the `startup-script` metadata key: run as
    /// root once SSH answers, before the provisioners; a non-zero exit
    /// fails the build, as Packer's wait for the startup script does.
    pub startup_script: Option<String>,
    /// `state_timeout`: how long the startup script may run. Default 5m.
    pub state_timeout: Duration,
    /// Options kept for validation only, with no meaning on a local build
    /// (`network`, `tags`, `preemptible`, ...): the option names, reported
    /// once as "not applied locally".
    pub not_applied: Vec<String>,
    /// `skip_create_image`: build and test, publish nothing (as
    /// `-publish=false` does).
    pub skip_create_image: bool,
}

/// The emulated instance: what its metadata server answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GceInstance {
    /// `project_id`.
    pub project_id: String,
    /// A stable number derived from the project id (GCE's numeric id).
    pub numeric_project_id: u64,
    /// `zone`, e.g. `us-central1-a`.
    pub zone: String,
    /// `instance_name`. Default `packer-{{uuid}}`.
    pub name: String,
    /// A stable number derived from the instance name.
    pub id: u64,
    /// `machine_type`, e.g. `n1-standard-1` (the default).
    pub machine_type: String,
    /// The source image as GCE would name it:
    /// `projects/<project>/global/images/<name>` (or `.../family/<family>`).
    pub image: String,
    /// `tags`.
    pub tags: Vec<String>,
    /// `labels`.
    pub labels: BTreeMap<String, String>,
    /// Instance attributes: `metadata`, then `metadata_files` (file
    /// content), then the build's `ssh-keys` entry, added by the pipeline.
    pub attributes: BTreeMap<String, String>,
    /// `network` (default `default`), shown in network-interfaces.
    pub network: String,
    /// `subnetwork`, when set.
    pub subnetwork: Option<String>,
    /// `service_account_email`; `None`: the project's default
    /// (`<numeric id>-compute@developer.gserviceaccount.com`), unless
    /// `disable_default_service_account`.
    pub service_account_email: Option<String>,
    /// `disable_default_service_account`: no service account at all.
    pub no_service_account: bool,
    /// `scopes`, with Packer's default set when not given.
    pub scopes: Vec<String>,
    /// `ssh_username`: gets the build's key and password-less sudo, as
    /// GCE's `ssh-keys` metadata gives them.
    pub ssh_username: String,
}

/// The Compute Engine image a `googlecompute` build publishes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GceImage {
    /// `project_id`: where the image goes.
    pub project_id: String,
    /// `account_file`; `None`: Application Default Credentials.
    pub account_file: Option<PathBuf>,
    /// `image_name`. Default `packer-{{timestamp}}`.
    pub name: String,
    /// `image_family`.
    pub family: Option<String>,
    /// `image_description`.
    pub description: Option<String>,
    /// `image_labels`.
    pub labels: BTreeMap<String, String>,
    /// `image_licenses`.
    pub licenses: Vec<String>,
    /// `image_guest_os_features`.
    pub guest_os_features: Vec<String>,
    /// `image_storage_locations`.
    pub storage_locations: Vec<String>,
}
