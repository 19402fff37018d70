//! The `vagrant` post-processor: a qemu build's disk as a libvirt Vagrant
//! box, laid out as Packer lays it out. The box is a tar (GNU format,
//! gzip'd unless the level is 0) holding `box.img` (the disk as
//! standalone qcow2, which is all vagrant-libvirt reads), `metadata.json`,
//! a `Vagrantfile` and the `include` files, in name order.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::BuildContext;
use super::report::Artifact;
use crate::error::FileError;
use crate::export::{FormatPolicy, ImageFormat, ParallelGzip};
use crate::plan::{Accelerator, VagrantConfig, render_late};

/// The provider of every box kiln makes: a qemu build's.
pub const PROVIDER: &str = "libvirt";
/// Packer's id for the vagrant post-processor's artifacts.
pub const BUILDER_ID: &str = "mitchellh.post-processor.vagrant";
/// What Packer's qemu artifact answers for `{{ .ArtifactId }}`.
const QEMU_ARTIFACT_ID: &str = "VM";
const GIB: u64 = 1 << 30;
/// Uncompressed bytes each gzip thread takes at a time.
const GZIP_BLOCK: usize = 4 << 20;

/// Why the box could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VagrantError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The disk could not be inspected.
    #[error("reading the disk")]
    Image(#[from] crate::export::ImageError),
    /// `qemu-img convert` to qcow2 failed.
    #[error("converting the disk to qcow2 for box.img")]
    Convert(#[source] crate::export::ToolError),
    /// The box could not be written.
    #[error("writing the box {}", path.display())]
    Write {
        /// The box.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The writing thread panicked or was cancelled.
    #[error("writing the box was interrupted")]
    Interrupted(#[source] tokio::task::JoinError),
}

/// One member of the box.
enum Member {
    Disk(PathBuf),
    Bytes(Vec<u8>),
}

/// Makes the box of `disk` (in `format`) and returns its artifact.
pub async fn vagrant(
    ctx: &BuildContext,
    config: &VagrantConfig,
    input: &Artifact,
    disk: &Path,
    format: ImageFormat,
    accelerator: Option<Accelerator>,
) -> Result<Artifact, VagrantError> {
    ctx.say(&format!("Creating Vagrant box for '{PROVIDER}' provider"));
    let values = [
        ("BuildName", input.build_name.as_str()),
        ("Provider", PROVIDER),
        ("ArtifactId", QEMU_ARTIFACT_ID),
    ];
    let output = PathBuf::from(render_late(&config.output, &values));
    let parent = match output.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => parent.to_path_buf(),
        None => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(FileError::write(&parent))?;

    let image = crate::export::check_image(disk, FormatPolicy::Known(format))?;
    // Scratch space beside the box: a converted disk is as large as the
    // box, and the system's temp dir may be a small tmpfs.
    let scratch = tempfile::Builder::new()
        .prefix(".kiln-vagrant-")
        .tempdir_in(&parent)
        .map_err(FileError::write(&parent))?;
    let box_img = if format == ImageFormat::Qcow2 && image.backing_chain.is_empty() {
        image.path.clone()
    } else {
        ctx.say(&format!(
            "Converting the {} disk to standalone qcow2 for box.img",
            format.as_str()
        ));
        let converted = scratch.path().join("box.img");
        crate::export::qemu_img::run(&[
            "convert".as_ref(),
            "-f".as_ref(),
            format.as_str().as_ref(),
            "-O".as_ref(),
            "qcow2".as_ref(),
            "--".as_ref(),
            image.path.as_os_str(),
            converted.as_os_str(),
        ])
        .await
        .map_err(VagrantError::Convert)?;
        converted
    };

    let mut members: BTreeMap<String, Member> = BTreeMap::new();
    for file in &config.include {
        ctx.say(&format!("Copying from include: {}", file.display()));
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        members.insert(name, Member::Disk(file.clone()));
    }
    members.insert("box.img".into(), Member::Disk(box_img));
    // As in Packer, an included metadata.json is kept; the Vagrantfile is
    // always the one made here.
    members
        .entry("metadata.json".into())
        .or_insert_with(|| Member::Bytes(metadata(image.virtual_size).into_bytes()));
    let custom = match &config.vagrantfile_template {
        Some(path) => {
            ctx.say(&format!("Using custom Vagrantfile: {}", path.display()));
            let text = fs::read_to_string(path).map_err(FileError::read(path))?;
            render_late(&text, &values)
        }
        None => String::new(),
    };
    members.insert(
        "Vagrantfile".into(),
        Member::Bytes(vagrantfile(driver(accelerator), &custom).into_bytes()),
    );

    let level = config.compression_level;
    let box_path = output.clone();
    let written =
        tokio::task::spawn_blocking(move || write_box(&box_path, &parent, &members, level))
            .await
            .map_err(VagrantError::Interrupted)?;
    drop(scratch);
    written?;
    Ok(Artifact {
        build_name: input.build_name.clone(),
        builder_type: input.builder_type.clone(),
        builder_id: BUILDER_ID.to_string(),
        id: None,
        description: format!("'{PROVIDER}' provider box: {}", output.display()),
        files: vec![output],
    })
}

/// Packer's libvirt driver for the build's accelerator: `kvm` under KVM,
/// `qemu` otherwise (chosen the way the build chose it when not set).
fn driver(accelerator: Option<Accelerator>) -> &'static str {
    let kvm = match accelerator {
        Some(Accelerator::Kvm) => true,
        Some(Accelerator::Tcg | Accelerator::None) => false,
        None => crate::qemu::detect_accel().0 == crate::qemu::Accel::Kvm,
    };
    if kvm { "kvm" } else { "qemu" }
}

/// `metadata.json` as Packer writes it (Go's encoder: keys sorted, a
/// newline at the end); the size in GB, rounded up.
fn metadata(virtual_size: u64) -> String {
    format!(
        "{{\"format\":\"qcow2\",\"provider\":\"{PROVIDER}\",\"virtual_size\":{}}}\n",
        virtual_size.div_ceil(GIB)
    )
}

/// Packer's box Vagrantfile: the libvirt provider's part, then the
/// template's own.
fn vagrantfile(driver: &str, custom: &str) -> String {
    format!(
        "\n# The contents below were provided by the Packer Vagrant post-processor\n\
         \nVagrant.configure(\"2\") do |config|\n  config.vm.provider :libvirt do |libvirt|\n    libvirt.driver = \"{driver}\"\n  end\nend\n\
         \n\n# The contents below (if any) are custom contents provided by the\n\
         # Packer template during image build.\n{custom}\n"
    )
}

/// Writes the box to a temporary file beside `output`, renamed into place
/// once complete: a failed or interrupted run leaves no partial box.
fn write_box(
    output: &Path,
    dir: &Path,
    members: &BTreeMap<String, Member>,
    level: u32,
) -> Result<(), VagrantError> {
    let write_err = |source: io::Error| VagrantError::Write {
        path: output.to_path_buf(),
        source,
    };
    let temp = tempfile::Builder::new()
        .prefix(".kiln-box-")
        .tempfile_in(dir)
        .map_err(write_err)?;
    let file = temp.as_file().try_clone().map_err(write_err)?;
    let out = BufWriter::new(file);
    if level == 0 {
        let mut out = append_all(out, members)?;
        out.flush().map_err(write_err)?;
    } else {
        let gzip = ParallelGzip::new(out, level, 0, GZIP_BLOCK).map_err(write_err)?;
        append_all(gzip, members)?.finish().map_err(write_err)?;
    }
    temp.as_file().sync_all().map_err(write_err)?;
    temp.persist(output).map_err(|err| write_err(err.error))?;
    Ok(())
}

/// The tar of `members` written to `out`, which is handed back.
fn append_all<W: Write>(out: W, members: &BTreeMap<String, Member>) -> Result<W, VagrantError> {
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut tar = tar::Builder::new(out);
    for (name, member) in members {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        match member {
            Member::Bytes(bytes) => {
                header.set_size(bytes.len() as u64);
                header.set_cksum();
                tar.append_data(&mut header, name, bytes.as_slice())
            }
            Member::Disk(path) => {
                let file = fs::File::open(path).map_err(FileError::read(path))?;
                let size = file.metadata().map_err(FileError::read(path))?.len();
                header.set_size(size);
                header.set_cksum();
                tar.append_data(&mut header, name, file)
            }
        }
        .map_err(|source| VagrantError::Write {
            path: PathBuf::from(name),
            source,
        })?;
    }
    tar.into_inner().map_err(|source| VagrantError::Write {
        path: PathBuf::from("the box"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_packers_with_the_size_in_whole_gigabytes() {
        assert_eq!(
            metadata(GIB),
            "{\"format\":\"qcow2\",\"provider\":\"libvirt\",\"virtual_size\":1}\n"
        );
        assert!(metadata(GIB + 1).contains("\"virtual_size\":2"));
        let parsed: serde_json::Value = serde_json::from_str(&metadata(40 * GIB)).unwrap();
        assert_eq!(parsed["virtual_size"], 40);
    }

    #[test]
    fn the_vagrantfile_has_the_driver_then_the_templates_part() {
        let text = vagrantfile(
            "qemu",
            "config.vm.synced_folder \".\", \"/vagrant\", disabled: true",
        );
        let at_driver = text.find("libvirt.driver = \"qemu\"").unwrap();
        let custom = text.find("synced_folder").unwrap();
        assert!(at_driver < custom, "{text}");
        assert_eq!(
            vagrantfile("kvm", ""),
            concat!(
                "\n# The contents below were provided by the Packer Vagrant post-processor\n",
                "\nVagrant.configure(\"2\") do |config|\n",
                "  config.vm.provider :libvirt do |libvirt|\n",
                "    libvirt.driver = \"kvm\"\n",
                "  end\n",
                "end\n",
                "\n\n# The contents below (if any) are custom contents provided by the\n",
                "# Packer template during image build.\n",
                "\n",
            )
        );
        assert_eq!(driver(Some(Accelerator::Kvm)), "kvm");
        assert_eq!(driver(Some(Accelerator::Tcg)), "qemu");
    }

    #[test]
    fn a_plain_box_is_a_tar_of_the_members_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk");
        fs::write(&disk, b"qcow2 bytes").unwrap();
        let members: BTreeMap<String, Member> = [
            ("box.img".to_string(), Member::Disk(disk)),
            ("Vagrantfile".to_string(), Member::Bytes(b"v".to_vec())),
            ("metadata.json".to_string(), Member::Bytes(b"{}".to_vec())),
        ]
        .into_iter()
        .collect();
        for level in [0, 6] {
            let out = dir.path().join(format!("x{level}.box"));
            write_box(&out, dir.path(), &members, level).unwrap();
            let bytes = fs::read(&out).unwrap();
            let tar_bytes = if level == 0 {
                bytes
            } else {
                assert_eq!(&bytes[..2], [0x1f, 0x8b], "gzip magic");
                let mut plain = Vec::new();
                io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut plain)
                    .unwrap();
                plain
            };
            let mut archive = tar::Archive::new(&tar_bytes[..]);
            let mut seen = Vec::new();
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                assert!(entry.header().as_gnu().is_some());
                let mut content = Vec::new();
                io::Read::read_to_end(&mut entry, &mut content).unwrap();
                seen.push((entry.path().unwrap().display().to_string(), content));
            }
            assert_eq!(
                seen,
                [
                    ("Vagrantfile".to_string(), b"v".to_vec()),
                    ("box.img".to_string(), b"qcow2 bytes".to_vec()),
                    ("metadata.json".to_string(), b"{}".to_vec()),
                ]
            );
        }
        // Nothing but the boxes is left beside them.
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["disk", "x0.box", "x6.box"]);
    }

    struct Quiet;

    impl crate::pipeline::report::Reporter for Quiet {
        fn stage(&self, _: &str, _: crate::pipeline::report::Stage) {}
        fn say(&self, _: &str, _: &str) {}
        fn output(&self, _: &str, _: &str) {}
        fn error(&self, _: &str, _: &str) {}
        fn artifacts(&self, _: &str, _: &[Artifact]) {}
        fn progress(&self, _: &str, _: Option<&crate::pipeline::report::Progress>) {}
    }

    fn ctx() -> BuildContext {
        BuildContext::standalone(
            "demo",
            std::sync::Arc::new(Quiet),
            tokio_util::sync::CancellationToken::new(),
        )
    }

    fn input(disk: &Path) -> Artifact {
        Artifact {
            build_name: "demo".into(),
            builder_type: "qemu".into(),
            builder_id: crate::pipeline::report::QEMU_BUILDER_ID.into(),
            id: None,
            files: vec![disk.to_path_buf()],
            description: String::new(),
        }
    }

    fn qcow2(dir: &Path) -> PathBuf {
        let disk = dir.join("disk.qcow2");
        let made = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("1536M")
            .status()
            .expect("qemu-img is needed for this test");
        assert!(made.success());
        disk
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn includes_join_the_box_and_an_included_metadata_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let disk = qcow2(dir.path());
        let extra = dir.path().join("info.json");
        fs::write(&extra, "{}").unwrap();
        let own_metadata = dir.path().join("metadata.json");
        fs::write(&own_metadata, "{\"provider\":\"libvirt\"}").unwrap();
        let config = VagrantConfig {
            output: format!(
                "{}/boxes/{{{{.BuildName}}}}_{{{{.Provider}}}}.box",
                dir.path().display()
            ),
            compression_level: 0,
            include: vec![extra, own_metadata],
            vagrantfile_template: None,
            keep_input_artifact: false,
        };
        let out = vagrant(
            &ctx(),
            &config,
            &input(&disk),
            &disk,
            ImageFormat::Qcow2,
            Some(Accelerator::Tcg),
        )
        .await
        .unwrap();
        let box_path = dir.path().join("boxes/demo_libvirt.box");
        assert_eq!(out.files, std::slice::from_ref(&box_path));
        assert_eq!(out.builder_id, BUILDER_ID);
        let mut archive = tar::Archive::new(fs::File::open(&box_path).unwrap());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut content = Vec::new();
            io::Read::read_to_end(&mut entry, &mut content).unwrap();
            seen.push((entry.path().unwrap().display().to_string(), content));
        }
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["Vagrantfile", "box.img", "info.json", "metadata.json"]
        );
        assert_eq!(seen[1].1, fs::read(&disk).unwrap(), "box.img is the disk");
        assert_eq!(seen[3].1, b"{\"provider\":\"libvirt\"}");
        assert_eq!(entries(&dir.path().join("boxes")), ["demo_libvirt.box"]);
    }

    #[tokio::test]
    async fn a_missing_vagrantfile_template_fails_and_leaves_no_box() {
        let dir = tempfile::tempdir().unwrap();
        let disk = qcow2(dir.path());
        let missing = dir.path().join("gone.tpl");
        let out_dir = dir.path().join("boxes");
        let config = VagrantConfig {
            output: format!("{}/x.box", out_dir.display()),
            compression_level: 6,
            include: vec![],
            vagrantfile_template: Some(missing.clone()),
            keep_input_artifact: false,
        };
        let err = vagrant(
            &ctx(),
            &config,
            &input(&disk),
            &disk,
            ImageFormat::Qcow2,
            Some(Accelerator::Tcg),
        )
        .await
        .unwrap_err();
        let chain = format!(
            "{err}: {}",
            std::error::Error::source(&err)
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        assert!(chain.contains(&missing.display().to_string()), "{chain}");
        assert!(entries(&out_dir).is_empty(), "{:?}", entries(&out_dir));
    }
}
