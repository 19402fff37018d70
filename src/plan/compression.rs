//! The gzip level of the tarballs kiln writes: one definition of its range
//! and default for the template, the CLI and the export.

use std::fmt;
use std::str::FromStr;

/// A gzip compression level, 1 (fastest) to 9 (smallest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CompressionLevel(u32);

/// A level outside [`CompressionLevel::MIN`]..=[`CompressionLevel::MAX`],
/// or text that is not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "compression level {given}: expected {} to {}",
    CompressionLevel::MIN,
    CompressionLevel::MAX
)]
pub struct InvalidCompressionLevel {
    /// What was given, as written.
    pub given: String,
}

impl CompressionLevel {
    /// The fastest level.
    pub const MIN: u32 = 1;
    /// The smallest output.
    pub const MAX: u32 = 9;
    /// Packer's and gzip's default: libdeflate's 6 is already smaller than
    /// zlib's 9 on disk images.
    pub const DEFAULT: CompressionLevel = CompressionLevel(6);

    /// The level as the number the compressor takes.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for CompressionLevel {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u32> for CompressionLevel {
    type Error = InvalidCompressionLevel;

    fn try_from(level: u32) -> Result<Self, Self::Error> {
        if (Self::MIN..=Self::MAX).contains(&level) {
            Ok(CompressionLevel(level))
        } else {
            Err(InvalidCompressionLevel {
                given: level.to_string(),
            })
        }
    }
}

impl FromStr for CompressionLevel {
    type Err = InvalidCompressionLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidCompressionLevel {
            given: s.to_string(),
        };
        let level: u32 = s.trim().parse().map_err(|_| invalid())?;
        CompressionLevel::try_from(level).map_err(|_| invalid())
    }
}

impl fmt::Display for CompressionLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_six() {
        assert_eq!(CompressionLevel::default().get(), 6);
        assert_eq!(CompressionLevel::default(), CompressionLevel::DEFAULT);
    }

    #[test]
    fn accepts_one_to_nine() {
        for n in 1..=9 {
            assert_eq!(CompressionLevel::try_from(n).unwrap().get(), n);
            assert_eq!(n.to_string().parse::<CompressionLevel>().unwrap().get(), n);
        }
    }

    #[test]
    fn refuses_other_levels_naming_the_range() {
        for n in [0, 10, u32::MAX] {
            let err = CompressionLevel::try_from(n).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("compression level {n}: expected 1 to 9")
            );
        }
        for s in ["", "fast", "-1", "6.5", "10"] {
            let err = s.parse::<CompressionLevel>().unwrap_err();
            assert_eq!(err.given, s);
            assert!(err.to_string().ends_with("expected 1 to 9"), "{err}");
        }
    }

    #[test]
    fn displays_as_the_number() {
        assert_eq!(CompressionLevel::try_from(9).unwrap().to_string(), "9");
    }
}
