//! kiln's one way of running `qemu-img`: `map` (where a disk's data is),
//! always told the format and run killable within a time bound, and [`run`]
//! for the pipeline's create/convert/resize, from async code.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::error::ToolError;
use super::extents::Extent;
use super::format::ImageFormat;

const QEMU_IMG: &str = "qemu-img";
/// A map of a sound chain takes seconds even for a large disk; far longer
/// means something is wrong, and the tool must not run on forever.
const MAP_LIMIT: Duration = Duration::from_secs(600);

#[derive(Deserialize)]
struct MapEntry {
    start: u64,
    length: u64,
    data: bool,
    zero: bool,
}

/// The ranges of the guest-visible disk that hold data, backing files
/// included; ranges known to read as zeros are left out.
pub fn map(
    disk: &Path,
    format: ImageFormat,
    cancel: Option<&CancellationToken>,
) -> Result<Vec<Extent>, ToolError> {
    let stdout = super::tool::run(
        QEMU_IMG,
        &[
            OsStr::new("map"),
            OsStr::new("--output=json"),
            OsStr::new("-f"),
            OsStr::new(format.as_str()),
            OsStr::new("--"),
            disk.as_os_str(),
        ],
        Some(MAP_LIMIT),
        cancel,
    )?;
    parse_map(&stdout)
}

/// Runs `qemu-img args` from async code (no time bound: a convert of a
/// large disk takes what it takes) and returns its stdout; dropping the
/// future kills it.
pub async fn run(args: &[&OsStr]) -> Result<Vec<u8>, ToolError> {
    super::tool::run_async(QEMU_IMG, args).await
}

fn parse_map(json: &[u8]) -> Result<Vec<Extent>, ToolError> {
    let entries: Vec<MapEntry> =
        serde_json::from_slice(json).map_err(|source| ToolError::Parse {
            program: QEMU_IMG,
            source,
        })?;
    Ok(entries
        .into_iter()
        .filter(|entry| entry.data && !entry.zero && entry.length > 0)
        .map(|entry| Extent::new(entry.start, entry.length))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_data_and_drops_zeros() {
        let json = br#"[{ "start": 0, "length": 1048576, "depth": 0, "present": false, "zero": true, "data": false, "compressed": false},
{ "start": 1048576, "length": 3145728, "depth": 0, "present": true, "zero": false, "data": true, "compressed": false, "offset": 327680},
{ "start": 4194304, "length": 65536, "depth": 1, "present": true, "zero": true, "data": true, "compressed": false},
{ "start": 4259840, "length": 62849024, "depth": 0, "present": false, "zero": true, "data": false, "compressed": false}]"#;
        assert_eq!(
            parse_map(json).unwrap(),
            vec![Extent::new(1_048_576, 3_145_728)]
        );
    }

    #[test]
    fn garbage_map_is_a_parse_error() {
        assert!(matches!(parse_map(b"nope"), Err(ToolError::Parse { .. })));
    }

    #[tokio::test]
    async fn run_gives_stdout_and_failures_with_stderr() {
        let out = run(&[OsStr::new("--version")]).await.unwrap();
        assert!(String::from_utf8_lossy(&out).contains("qemu-img"));
        let err = run(&[OsStr::new("info"), OsStr::new("/nonexistent/kiln.qcow2")])
            .await
            .unwrap_err();
        assert!(matches!(err, ToolError::Failed { .. }), "{err}");
        assert!(err.to_string().contains("kiln.qcow2"), "{err}");
    }
}
