//! The NoCloud seed: `meta-data` and `user-data` on a `cidata` volume.

use std::path::Path;

use super::iso9660::{self, Dir, FileEntry};
use super::{NoCloud, SeedError};

/// `meta-data`: the instance id (a new one makes cloud-init run again on a
/// reused disk) and the hostname.
pub fn meta_data(seed: &NoCloud<'_>) -> String {
    format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        yaml_scalar(seed.instance_id),
        yaml_scalar(seed.hostname)
    )
}

/// `user-data`: only the build's key, through the top-level
/// `ssh_authorized_keys`, which cloud-init gives to the image's default
/// user (and to root, behind the image's own `disable_root` policy).
///
/// No `users:` entry and no `disable_root`: either would change the image
/// (a user that stays, a root login the image refuses) and would turn a
/// wrong `ssh_username` into a successful build instead of a failed login.
///
/// The key sits on its own `- <key>` line: the busybox test fixture
/// reads it from there.
///
/// With a `key_user` (a `googlecompute` build) the key goes to that user
/// alone, created with password-less sudo the way GCE's guest agent
/// creates a user of the `ssh-keys` metadata: the user stays in the image,
/// as it does after a build on GCE.
pub fn user_data(seed: &NoCloud<'_>) -> String {
    let key = yaml_scalar(seed.public_key.trim());
    match seed.key_user {
        // cloud-init gives root the top-level keys.
        Some(user) if user != "root" => format!(
            "#cloud-config\nusers:\n  - default\n  - name: {}\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    groups: adm\n    shell: /bin/bash\n    lock_passwd: true\n    ssh_authorized_keys:\n      - {key}\n",
            yaml_scalar(user)
        ),
        _ => format!("#cloud-config\nssh_authorized_keys:\n  - {key}\n"),
    }
}

/// Writes the seed ISO, volume label `cidata`, dated `timestamp`.
pub fn write(out: &Path, seed: &NoCloud<'_>, timestamp: i64) -> Result<(), SeedError> {
    let mut root = Dir::default();
    root.add_file(&["meta-data"], FileEntry::bytes(meta_data(seed)));
    root.add_file(&["user-data"], FileEntry::bytes(user_data(seed)));
    iso9660::write(
        &root,
        &iso9660::Options {
            volume_id: "cidata",
            timestamp,
        },
        out,
    )
}

/// `s` as a YAML scalar: plain when that reads back as the same string,
/// else double-quoted.
pub(crate) fn yaml_scalar(s: &str) -> String {
    if is_plain_safe(s) {
        return s.to_string();
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => q.push_str(&format!("\\x{:02x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || " ._-+/=@:,".contains(c);
    // Words YAML 1.1 (cloud-init's PyYAML) reads as booleans or null.
    let special = [
        "y", "n", "yes", "no", "true", "false", "on", "off", "null", "~",
    ];
    s.chars().all(allowed)
        && (first.is_ascii_alphanumeric() || first == '/' || first == '_')
        && !s.ends_with(' ')
        && !s.ends_with(':')
        && !s.contains(": ")
        && !s.contains(" #")
        && !special.contains(&s.to_ascii_lowercase().as_str())
        && s.parse::<f64>().is_err()
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0Zm9vYmFyYmF6cXV4 kiln";

    fn seed() -> NoCloud<'static> {
        NoCloud {
            instance_id: "kiln-1234",
            hostname: "web",
            public_key: KEY,
            key_user: None,
        }
    }

    #[test]
    fn a_key_user_gets_the_key_and_sudo() {
        let packer = NoCloud {
            key_user: Some("packer"),
            ..seed()
        };
        assert_eq!(
            user_data(&packer),
            format!(
                "#cloud-config\nusers:\n  - default\n  - name: packer\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    groups: adm\n    shell: /bin/bash\n    lock_passwd: true\n    ssh_authorized_keys:\n      - {KEY}\n"
            )
        );
        let root = NoCloud {
            key_user: Some("root"),
            ..seed()
        };
        assert_eq!(user_data(&root), user_data(&seed()));
        let odd = NoCloud {
            key_user: Some("yes"),
            ..seed()
        };
        assert!(user_data(&odd).contains("  - name: \"yes\"\n"));
    }

    #[test]
    fn user_data_holds_the_key_and_nothing_else() {
        assert_eq!(
            user_data(&seed()),
            format!("#cloud-config\nssh_authorized_keys:\n  - {KEY}\n")
        );
    }

    #[test]
    fn meta_data_text() {
        assert_eq!(
            meta_data(&seed()),
            "instance-id: kiln-1234\nlocal-hostname: web\n"
        );
    }

    #[test]
    fn yaml_quoting() {
        assert_eq!(yaml_scalar("kiln"), "kiln");
        assert_eq!(yaml_scalar(KEY), KEY);
        assert_eq!(yaml_scalar("yes"), "\"yes\"");
        assert_eq!(yaml_scalar("123"), "\"123\"");
        assert_eq!(yaml_scalar(""), "\"\"");
        assert_eq!(yaml_scalar("a: b"), "\"a: b\"");
        assert_eq!(yaml_scalar("x #c"), "\"x #c\"");
        assert_eq!(yaml_scalar("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
        assert_eq!(yaml_scalar("-x"), "\"-x\"");
        assert_eq!(yaml_scalar("*x"), "\"*x\"");
    }
}
