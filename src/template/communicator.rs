//! A builder's communicator options: Packer's `communicator` block, whose
//! keys sit flat in the builder (`ssh_username`, `ssh_bastion_host`, ...).
//!
//! Every option of Packer 1.6's communicator config is accepted and its type
//! checked. kiln applies the ones that matter for a local QEMU guest; the rest
//! (bastions, proxies, agents, tunnels, algorithm lists, ...) are listed in
//! [`SshOptions::not_applied`] and the build says so once. The `winrm`
//! communicator is refused: kiln's communicator is SSH.

use std::path::Path;

use super::decode::Obj;
use super::paths;
use crate::plan::defaults;
use crate::plan::{Communicator, KeyPairType, SshOptions};

/// The kinds of value the options kiln accepts without applying take.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Port,
    Int,
    Duration,
    List,
}

/// Packer 1.6 SSH options kiln type-checks but does not apply.
const NOT_APPLIED: &[(&str, Kind)] = &[
    ("ssh_keypair_name", Kind::Str),
    ("temporary_key_pair_name", Kind::Str),
    ("temporary_key_pair_bits", Kind::Int),
    ("ssh_clear_authorized_keys", Kind::Bool),
    ("ssh_certificate_file", Kind::Str),
    ("ssh_agent_auth", Kind::Bool),
    ("ssh_disable_agent_forwarding", Kind::Bool),
    ("ssh_bastion_host", Kind::Str),
    ("ssh_bastion_port", Kind::Port),
    ("ssh_bastion_agent_auth", Kind::Bool),
    ("ssh_bastion_username", Kind::Str),
    ("ssh_bastion_password", Kind::Str),
    ("ssh_bastion_interactive", Kind::Bool),
    ("ssh_bastion_private_key_file", Kind::Str),
    ("ssh_bastion_certificate_file", Kind::Str),
    ("ssh_file_transfer_method", Kind::Str),
    ("ssh_proxy_host", Kind::Str),
    ("ssh_proxy_port", Kind::Port),
    ("ssh_proxy_username", Kind::Str),
    ("ssh_proxy_password", Kind::Str),
    ("ssh_keep_alive_interval", Kind::Duration),
    ("ssh_read_write_timeout", Kind::Duration),
    ("ssh_remote_tunnels", Kind::List),
    ("ssh_local_tunnels", Kind::List),
    ("ssh_ciphers", Kind::List),
    ("ssh_key_exchange_algorithms", Kind::List),
];

/// Packer 1.6's WinRM options: meaningless without the winrm communicator,
/// and accepted beside ssh as Packer accepts them.
const WINRM: &[(&str, Kind)] = &[
    ("winrm_username", Kind::Str),
    ("winrm_password", Kind::Str),
    ("winrm_host", Kind::Str),
    ("winrm_port", Kind::Port),
    ("winrm_timeout", Kind::Duration),
    ("winrm_use_ssl", Kind::Bool),
    ("winrm_insecure", Kind::Bool),
    ("winrm_use_ntlm", Kind::Bool),
];

/// The SSH options kiln applies.
const SSH_KEYS: &[&str] = &[
    "ssh_host",
    "ssh_username",
    "ssh_password",
    "ssh_private_key_file",
    "ssh_timeout",
    "ssh_wait_timeout",
    "ssh_port",
    "ssh_handshake_attempts",
    "ssh_pty",
    "temporary_key_pair_type",
    "pause_before_connecting",
];

/// Decodes the communicator keys of the builder object `o`; `None` when
/// something is wrong (reported to `o`'s context).
pub fn decode(o: &mut Obj<'_>, cwd: &Path) -> Option<Communicator> {
    let cx = o.cx();
    let kind = o.string("communicator").unwrap_or_default();
    check_kinds(o, WINRM);
    match kind.as_str() {
        "" | "ssh" => {}
        "none" => {
            o.allow(SSH_KEYS);
            check_kinds(o, NOT_APPLIED);
            return Some(Communicator::None);
        }
        "winrm" => {
            cx.problem(
                o.key_path("communicator"),
                "the winrm communicator (Windows guests) is not supported: \
                 kiln's communicator is SSH; use ssh or none",
            );
            o.allow(SSH_KEYS);
            check_kinds(o, NOT_APPLIED);
            return None;
        }
        other => {
            cx.problem(
                o.key_path("communicator"),
                format!("expected ssh or none, got {other:?}"),
            );
            o.allow(SSH_KEYS);
            check_kinds(o, NOT_APPLIED);
            return None;
        }
    }
    let username = o.non_empty_string("ssh_username");
    if username.is_none() {
        o.missing("ssh_username", "the user to connect as over SSH");
    }
    let password = o.string("ssh_password").filter(|s| !s.is_empty());
    let private_key_file = o.non_empty_string("ssh_private_key_file").and_then(|s| {
        let p = paths::resolve(cwd, &s);
        if p.is_file() {
            Some(p)
        } else {
            cx.problem(
                o.key_path("ssh_private_key_file"),
                format!("file not found: {}", p.display()),
            );
            None
        }
    });
    let host = o.non_empty_string("ssh_host");
    let timeout = o.duration("ssh_timeout");
    // Packer: ssh_wait_timeout is the older name and wins when set.
    let timeout = o
        .duration("ssh_wait_timeout")
        .or(timeout)
        .unwrap_or(defaults::SSH_TIMEOUT);
    let pause_before_connecting = o.duration("pause_before_connecting").unwrap_or_default();
    let port = o
        .int("ssh_port", 1, 65535)
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or(defaults::SSH_PORT);
    let handshake_attempts = o
        .int("ssh_handshake_attempts", 0, i64::from(u32::MAX))
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(defaults::SSH_HANDSHAKE_ATTEMPTS);
    let pty = o.bool("ssh_pty").unwrap_or(false);
    let key_type = match o.string("temporary_key_pair_type").as_deref() {
        None | Some("") | Some("ed25519") => Some(KeyPairType::Ed25519),
        Some("rsa") => Some(KeyPairType::Rsa),
        Some(other) => {
            cx.problem(
                o.key_path("temporary_key_pair_type"),
                format!("expected ed25519 or rsa, got {other:?}"),
            );
            None
        }
    };
    if let Some(method) = o.string("ssh_file_transfer_method")
        && !matches!(method.as_str(), "" | "scp" | "sftp")
    {
        cx.problem(
            o.key_path("ssh_file_transfer_method"),
            format!("expected scp or sftp, got {method:?}"),
        );
    }
    let not_applied = check_kinds(o, NOT_APPLIED);
    Some(Communicator::Ssh(SshOptions {
        username: username?,
        password,
        private_key_file,
        host,
        timeout,
        pause_before_connecting,
        port,
        handshake_attempts,
        pty,
        temporary_key_pair_type: key_type?,
        not_applied,
    }))
}

/// Checks the type of each of `keys` that is set; returns the names of those
/// set to something other than their zero value.
fn check_kinds(o: &mut Obj<'_>, keys: &[(&'static str, Kind)]) -> Vec<String> {
    let mut set = Vec::new();
    for (key, kind) in keys {
        let meaningful = match kind {
            Kind::Str => o.string(key).is_some_and(|s| !s.is_empty()),
            Kind::Bool => o.bool(key).unwrap_or(false),
            Kind::Port => o.int(key, 0, 65535).is_some_and(|n| n > 0),
            Kind::Int => o.int(key, 0, i64::from(u32::MAX)).is_some_and(|n| n > 0),
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
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::super::{Overrides, TemplateError, load_bytes};
    use crate::plan::{Communicator, Plan, SshOptions};

    fn load(builder_extra: Value) -> Result<Plan, TemplateError> {
        let mut builder = json!({
            "type": "qemu",
            "iso_url": "/images/base.qcow2",
            "iso_checksum": "none",
            "ssh_username": "u"
        });
        for (k, v) in builder_extra.as_object().unwrap() {
            builder[k] = v.clone();
        }
        let template = json!({ "builders": [builder] });
        load_bytes(
            &PathBuf::from("/t/template.json"),
            template.to_string().as_bytes(),
            &Overrides::default(),
        )
    }

    fn ssh(builder_extra: Value) -> SshOptions {
        match load(builder_extra)
            .unwrap()
            .builds
            .remove(0)
            .qemu
            .communicator
        {
            Communicator::Ssh(options) => options,
            Communicator::None => panic!("no communicator"),
        }
    }

    fn problems(builder_extra: Value) -> Vec<(String, String)> {
        match load(builder_extra) {
            Err(TemplateError::Invalid { problems, .. }) => {
                problems.into_iter().map(|p| (p.path, p.message)).collect()
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn applied_options_reach_the_plan() {
        let options = ssh(json!({
            "ssh_host": "192.0.2.7",
            "pause_before_connecting": "1m30s",
            "ssh_wait_timeout": "20m"
        }));
        assert_eq!(options.host.as_deref(), Some("192.0.2.7"));
        assert_eq!(options.pause_before_connecting, Duration::from_secs(90));
        assert_eq!(options.timeout, Duration::from_secs(20 * 60));
        assert!(options.not_applied.is_empty());
        let defaults = ssh(json!({}));
        assert_eq!(defaults.host, None);
        assert_eq!(defaults.pause_before_connecting, Duration::ZERO);
    }

    #[test]
    fn every_packer_ssh_option_is_accepted_and_the_unapplied_ones_listed() {
        let options = ssh(json!({
            "ssh_agent_auth": false,
            "ssh_disable_agent_forwarding": true,
            "ssh_keep_alive_interval": "10s",
            "ssh_read_write_timeout": "",
            "ssh_file_transfer_method": "sftp",
            "ssh_bastion_host": "bastion",
            "ssh_bastion_port": 2222,
            "ssh_proxy_host": "",
            "ssh_proxy_port": "8080",
            "ssh_clear_authorized_keys": "true",
            "ssh_local_tunnels": ["8080:localhost:80"],
            "ssh_remote_tunnels": [],
            "ssh_ciphers": ["aes128-gcm@openssh.com"],
            "ssh_key_exchange_algorithms": ["curve25519-sha256"],
            "ssh_certificate_file": "",
            "temporary_key_pair_bits": 4096,
            "winrm_username": "vagrant",
            "winrm_timeout": "2h"
        }));
        // Only the ones set to something other than Packer's zero value.
        assert_eq!(
            options.not_applied,
            [
                "temporary_key_pair_bits",
                "ssh_clear_authorized_keys",
                "ssh_disable_agent_forwarding",
                "ssh_bastion_host",
                "ssh_bastion_port",
                "ssh_file_transfer_method",
                "ssh_proxy_port",
                "ssh_keep_alive_interval",
                "ssh_local_tunnels",
                "ssh_ciphers",
                "ssh_key_exchange_algorithms",
            ]
        );
    }

    #[test]
    fn wrong_types_are_named() {
        assert_eq!(
            problems(json!({
                "ssh_agent_auth": "maybe",
                "ssh_keep_alive_interval": "often",
                "ssh_bastion_port": 70000,
                "ssh_local_tunnels": {"8080": "localhost:80"},
                "ssh_file_transfer_method": "rsync",
                "winrm_port": "x"
            }))
            .into_iter()
            .map(|(path, _)| path)
            .collect::<Vec<_>>(),
            [
                "builders[0].winrm_port",
                "builders[0].ssh_file_transfer_method",
                "builders[0].ssh_agent_auth",
                "builders[0].ssh_bastion_port",
                "builders[0].ssh_keep_alive_interval",
                "builders[0].ssh_local_tunnels",
            ]
        );
    }

    #[test]
    fn winrm_is_one_clear_error() {
        assert_eq!(
            problems(json!({
                "communicator": "winrm",
                "winrm_username": "vagrant",
                "winrm_password": "vagrant",
                "winrm_timeout": "4h"
            })),
            [(
                "builders[0].communicator".to_string(),
                "the winrm communicator (Windows guests) is not supported: kiln's communicator \
                 is SSH; use ssh or none"
                    .to_string()
            )]
        );
    }
}
