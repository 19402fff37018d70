//! What `qemu-img` says about a disk: its format, virtual size and map.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use super::error::ToolError;
use super::extents::Extent;

const QEMU_IMG: &str = "qemu-img";

/// The disk as qemu-img sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: String,
    pub virtual_size: u64,
}

#[derive(Deserialize)]
struct InfoJson {
    format: String,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
}

#[derive(Deserialize)]
struct MapEntry {
    start: u64,
    length: u64,
    data: bool,
    zero: bool,
}

/// The format qemu-img probes and the guest-visible size.
pub fn info(disk: &Path) -> Result<ImageInfo, ToolError> {
    let stdout = run(&["info", "--output=json"], disk)?;
    let parsed: InfoJson = serde_json::from_slice(&stdout).map_err(|source| ToolError::Parse {
        program: QEMU_IMG,
        source,
    })?;
    Ok(ImageInfo {
        format: parsed.format,
        virtual_size: parsed.virtual_size,
    })
}

/// The ranges of the guest-visible disk that hold data, backing files
/// included; ranges known to read as zeros are left out.
pub fn map(disk: &Path, format: &str) -> Result<Vec<Extent>, ToolError> {
    let stdout = run(&["map", "--output=json", "-f", format], disk)?;
    parse_map(&stdout)
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

fn run(args: &[&str], disk: &Path) -> Result<Vec<u8>, ToolError> {
    let output = Command::new(QEMU_IMG)
        .args(args)
        .arg(disk)
        .output()
        .map_err(|source| ToolError::Spawn {
            program: QEMU_IMG,
            source,
        })?;
    if !output.status.success() {
        return Err(ToolError::Failed {
            program: QEMU_IMG,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(output.stdout)
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
}
