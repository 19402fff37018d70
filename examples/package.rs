//! Packages a disk as GCE's `disk.raw` tarball, as `kiln` will:
//! `package DISK OUT.tar.gz [--level N] [--threads N] [--mtime SECONDS]`.
//! Prints the summary as JSON.

use std::path::PathBuf;

use anyhow::{Context, bail};
use kiln::export::{PackageOptions, package_to_file};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut options = PackageOptions::default();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> anyhow::Result<u64> {
            let text = args
                .next()
                .with_context(|| format!("{name} needs a value"))?;
            text.parse().with_context(|| format!("{name} {text}"))
        };
        match arg.as_str() {
            "--level" => options.level = u32::try_from(value("--level")?)?,
            "--threads" => options.threads = usize::try_from(value("--threads")?)?,
            "--mtime" => options.mtime = Some(value("--mtime")?),
            _ if arg.starts_with("--") => bail!("unknown option {arg}"),
            _ => paths.push(arg.into()),
        }
    }
    let [disk, out] = paths.as_slice() else {
        bail!("usage: package DISK OUT.tar.gz [--level N] [--threads N] [--mtime SECONDS]");
    };
    // As before: the example replaces its output (never its input).
    let summary = package_to_file(disk, out, true, &options)
        .map_err(|err| anyhow::anyhow!(kiln::error::error_chain(&err)))?;
    let json = serde_json::json!({
        "format": summary.format,
        "virtual_size": summary.virtual_size,
        "raw_size": summary.raw_size,
        "data_bytes": summary.data_bytes,
        "tar_bytes": summary.tar_bytes,
        "compressed_bytes": summary.compressed_bytes,
    });
    println!("{json}");
    Ok(())
}
