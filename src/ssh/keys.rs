//! Temporary key pairs, and loading the private key used to log in.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::{KeypairData, RsaKeypair};
use russh::keys::{Algorithm, PrivateKey};

use super::SshError;

/// 4096 bits costs seconds (tens of seconds in a debug build) of prime
/// search per build for a key that lives minutes; 3072 bits is still
/// 128-bit strength.
const RSA_BITS: usize = 3072;

const COMMENT: &str = "kiln";

/// A temporary key pair written for one build.
pub struct GeneratedKey {
    /// OpenSSH private key, mode 0600.
    pub private_key_path: PathBuf,
    /// `ssh-ed25519 AAAA... kiln` (one line, no newline).
    pub public_key_openssh: String,
}

/// Generates a key pair (ed25519 or rsa) and writes the private key, mode
/// 0600, into `dir`.
pub fn generate_key(dir: &Path, rsa: bool) -> Result<GeneratedKey, SshError> {
    let (name, key) = if rsa {
        ("kiln_rsa", random_rsa()?)
    } else {
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .map_err(|err| key_error(dir, err))?;
        ("kiln_ed25519", key)
    };
    let mut key = key;
    key.set_comment(COMMENT);
    let path = dir.join(name);
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|err| key_error(&path, err))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|err| key_error(&path, err))?;
    write_private(&path, pem.as_bytes())?;
    Ok(GeneratedKey {
        private_key_path: path,
        public_key_openssh: public.trim_end().to_string(),
    })
}

fn random_rsa() -> Result<PrivateKey, SshError> {
    let pair = RsaKeypair::random(&mut rand::rng(), RSA_BITS)
        .map_err(|err| key_error(Path::new("(new rsa key)"), err))?;
    PrivateKey::new(KeypairData::from(pair), COMMENT)
        .map_err(|err| key_error(Path::new("(new rsa key)"), err))
}

/// Creates the file with mode 0600 from the start, so the key is never
/// readable by others, not even for a moment.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), SshError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| SshError::local(path, err))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|err| SshError::local(path, err))
}

/// The public half of an OpenSSH private key file, as one
/// `authorized_keys` line (no newline).
pub fn public_key_of(path: &Path) -> Result<String, SshError> {
    let key = load_private(path)?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|err| key_error(path, err))?;
    Ok(public.trim_end().to_string())
}

/// Reads an unencrypted OpenSSH private key.
pub(super) fn load_private(path: &Path) -> Result<PrivateKey, SshError> {
    let text = std::fs::read_to_string(path).map_err(|err| key_error(path, err))?;
    let key = PrivateKey::from_openssh(text.as_bytes()).map_err(|err| key_error(path, err))?;
    if key.is_encrypted() {
        return Err(key_error(
            path,
            "the key is encrypted; kiln needs an unencrypted key",
        ));
    }
    Ok(key)
}

fn key_error(path: &Path, err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SshError {
    SshError::Key {
        path: path.to_path_buf(),
        source: err.into(),
    }
}
