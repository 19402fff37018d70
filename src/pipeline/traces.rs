//! What kiln itself puts into the guest to reach it, and taking it out
//! again before the image is shut down: the build's public key in every
//! `authorized_keys` cloud-init wrote it to, and cloud-init's copy of the
//! seed's user-data. Also reading, from what the guest printed, which user
//! the image expects, for the error when the login fails.

use super::MachineError;
use crate::ssh::Guest;
use crate::ssh::{ExitStatus, Stream};

/// What a build put into the guest through its seed.
#[derive(Clone)]
pub struct BuildKey {
    /// `ssh-ed25519 AAAA... kiln`.
    pub public_key: String,
    /// The seed's `instance-id` (`kiln-<uuid>`).
    pub instance_id: String,
}

/// Runs as root (directly, or through `sudo -n`), else as the SSH user:
/// `$1` is the key's base64 blob, `$2` the seed's instance-id.
///
/// Every `authorized_keys`/`authorized_keys2` under root's and each
/// `/etc/passwd` user's home loses the lines holding that blob, whatever
/// options precede it (cloud-init puts root's copy behind a forced
/// command). The files are rewritten in place, so owner and mode stay,
/// and are kept even when they end up empty: cloud-init itself creates
/// `~/.ssh/authorized_keys` for the default user and root on the first
/// boot of every instance, keys or not, so an empty file is what it leaves
/// too. cloud-init's copy of the user-data
/// (`/var/lib/cloud/instances/<id>`, and the `instance` link to it) goes
/// as well; the next boot is a new instance and makes its own.
///
/// Prints one line per finding: `removed FILE`, `failed FILE`,
/// `unchecked DIR` (a home this user cannot search), `removed-seed DIR`.
const CLEANUP_SCRIPT: &str = r#"
blob=$1 iid=$2
for home in $( (echo /root; cut -d: -f6 /etc/passwd) | sort -u); do
    case $home in /*) ;; *) continue ;; esac
    if [ -d "$home" ] && ! [ -x "$home" ]; then
        echo "unchecked $home"
        continue
    fi
    for f in "$home/.ssh/authorized_keys" "$home/.ssh/authorized_keys2"; do
        [ -f "$f" ] || continue
        grep -qF -- "$blob" "$f" 2>/dev/null || {
            [ -r "$f" ] || echo "unchecked $f"
            continue
        }
        t=$(mktemp) || { echo "failed $f"; continue; }
        # awk fails when no line held the key (the blob inside a longer one).
        if awk -v b="$blob" '{ for (i = 1; i <= NF; i++) if ($i == b) { n++; next } print }
            END { exit !n }' "$f" >"$t"; then
            if cat "$t" >"$f"; then echo "removed $f"; else echo "failed $f"; fi
        fi
        rm -f "$t"
    done
done
d=/var/lib/cloud/instances/$iid
if [ -d "$d" ]; then
    if [ "$(readlink /var/lib/cloud/instance 2>/dev/null)" = "$d" ] ||
        [ "$(readlink /var/lib/cloud/instance 2>/dev/null)" = "instances/$iid" ]; then
        rm -f /var/lib/cloud/instance
    fi
    rm -rf "$d" && echo "removed-seed $d" || echo "failed $d"
fi
exit 0
"#;

/// The command line that runs [`CLEANUP_SCRIPT`] with root's rights when
/// the SSH user has them or password-less sudo (as cloud images give their
/// default user), else as that user.
fn cleanup_command(blob: &str, instance_id: &str) -> String {
    let script = quote(CLEANUP_SCRIPT);
    let args = format!("kiln {} {}", quote(blob), quote(instance_id));
    format!(
        "if [ \"$(id -u)\" = 0 ]; then sh -c {script} {args}; \
         elif sudo -n true >/dev/null 2>&1; then sudo -n sh -c {script} {args}; \
         else sh -c {script} {args}; fi"
    )
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// What the cleanup found, line by line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    removed: Vec<String>,
    failed: Vec<String>,
    unchecked: Vec<String>,
    seed: Vec<String>,
}

fn parse_report(lines: &[String]) -> Report {
    let mut report = Report::default();
    for line in lines {
        let Some((word, path)) = line.trim().split_once(' ') else {
            continue;
        };
        let list = match word {
            "removed" => &mut report.removed,
            "failed" => &mut report.failed,
            "unchecked" => &mut report.unchecked,
            "removed-seed" => &mut report.seed,
            _ => continue,
        };
        list.push(path.to_string());
    }
    report
}

/// Removes the build key and the seed's traces; fails when a copy of the
/// key may stay in the image.
pub async fn remove(
    ctx: &super::BuildContext,
    guest: &mut Guest,
    key: &BuildKey,
) -> Result<(), MachineError> {
    let Some(blob) = key.public_key.split_whitespace().nth(1) else {
        return Ok(());
    };
    ctx.say("Removing the build key from the guest...");
    let session = guest.session().await.map_err(MachineError::Ssh)?;
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let status = session
        .exec(
            &cleanup_command(blob, &key.instance_id),
            &mut |stream, line| {
                match stream {
                    Stream::Stdout => lines.push(line.to_string()),
                    Stream::Stderr if errors.len() < 20 => errors.push(line.to_string()),
                    Stream::Stderr => {}
                }
                tracing::debug!(build = %ctx.name, ?stream, "key cleanup: {line}");
            },
        )
        .await
        .map_err(MachineError::Ssh)?;
    let report = parse_report(&lines);
    for path in &report.removed {
        ctx.say(&format!("Removed the build key from {path}"));
    }
    for path in &report.seed {
        ctx.say(&format!("Removed cloud-init's copy of the seed: {path}"));
    }
    // Root's home is where cloud-init always copies the key; other homes
    // this user cannot search never got it.
    let mut left = report.failed;
    left.extend(
        report
            .unchecked
            .into_iter()
            .filter(|p| p == "/root" || p.starts_with("/root/"))
            .map(|p| format!("{p}: not readable without root, and `sudo -n` was refused")),
    );
    if status != ExitStatus::Code(0) || !left.is_empty() {
        return Err(MachineError::KeyLeft {
            failure: match status {
                ExitStatus::Code(0) => None,
                ExitStatus::Code(code) => Some(format!("exit code {code}")),
                ExitStatus::Signal(signal) => Some(format!("signal {signal}")),
                ExitStatus::Disconnected => Some("the connection closed".to_string()),
            },
            places: left,
            said: errors.join("\n"),
        });
    }
    Ok(())
}

/// The image's default user, from what cloud-init printed on the console:
/// the user of its first `Authorized keys from FILE for user NAME` table
/// (or `no authorized SSH keys fingerprints found for user NAME`), or the
/// user its root login refusal names.
pub fn default_user(console: &str) -> Option<String> {
    const MARKERS: [&str; 2] = [
        "Authorized keys from ",
        "no authorized SSH keys fingerprints found for user ",
    ];
    for line in console.lines() {
        if let Some(at) = line.find(MARKERS[0]) {
            let rest = &line[at..];
            if let Some(user) = rest.split(" for user ").nth(1).and_then(user_name) {
                return Some(user);
            }
        }
        if let Some(at) = line.find(MARKERS[1])
            && let Some(user) = user_name(&line[at + MARKERS[1].len()..])
        {
            return Some(user);
        }
        if let Some(user) = refused_for(line) {
            return Some(user);
        }
    }
    None
}

/// The user named by cloud-init's `Please login as the user "NAME"
/// rather than the user "root".` (the quotes may come escaped, as
/// dropbear leaves them).
pub fn refused_for(text: &str) -> Option<String> {
    const MARKER: &str = "Please login as the user ";
    let at = text.find(MARKER)?;
    let rest = text[at + MARKER.len()..].trim_start_matches(['\\', '"']);
    user_name(rest)
}

/// The leading user name of `text` (letters, digits, `.`, `_`, `-`), if
/// any.
fn user_name(text: &str) -> Option<String> {
    let name: String = text
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    let name = name.trim_end_matches('.');
    (!name.is_empty()).then(|| name.to_string())
}

/// Runs a command as the SSH user to find out whether the guest lets it in
/// for real: cloud-init's root refusal takes the key and then answers
/// every command with "Please login as the user ...". `Some(said)` when
/// that is the answer.
pub async fn refused_login(guest: &mut Guest) -> Result<Option<String>, MachineError> {
    let session = guest.session().await.map_err(MachineError::Ssh)?;
    let mut said = Vec::new();
    let status = session
        .exec("echo kiln", &mut |_, line| {
            if said.len() < 20 {
                said.push(line.to_string());
            }
        })
        .await
        .map_err(MachineError::Ssh)?;
    let said = said.join("\n");
    if status != ExitStatus::Code(0) && said.contains("Please login as the user") {
        return Ok(Some(said.trim().to_string()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_user_from_cloud_init_tables() {
        let console = "[   12.3] cloud-init[612]: ci-info: no authorized SSH keys fingerprints found for user nobody.\n";
        assert_eq!(default_user(console).as_deref(), Some("nobody"));
        let console = "boot\nci-info: +++++Authorized keys from /home/ubuntu/.ssh/authorized_keys for user ubuntu+++++\nci-info: +---\n";
        assert_eq!(default_user(console).as_deref(), Some("ubuntu"));
        let console = "Please login as the user \\\"debian\\\" rather than the user \\\"root\\\".";
        assert_eq!(default_user(console).as_deref(), Some("debian"));
        assert_eq!(default_user("fixture: ssh up\n"), None);
        // Nothing but a name is taken from the guest.
        let console = "ci-info: Authorized keys from /x for user \x1b[31m;rm -rf\n";
        assert_eq!(default_user(console), None);
    }

    #[test]
    fn refusal_names_the_user_with_or_without_escapes() {
        assert_eq!(
            refused_for("Please login as the user \"ubuntu\" rather than the user \"root\".")
                .as_deref(),
            Some("ubuntu")
        );
        assert_eq!(
            refused_for("Please login as the user \\\"ec2-user\\\" rather than").as_deref(),
            Some("ec2-user")
        );
        assert_eq!(refused_for("Permission denied"), None);
    }

    #[test]
    fn report_lines() {
        let lines: Vec<String> = [
            "removed /root/.ssh/authorized_keys",
            "unchecked /home/app",
            "failed /home/x/.ssh/authorized_keys",
            "removed-seed /var/lib/cloud/instances/kiln-1",
            "noise",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            parse_report(&lines),
            Report {
                removed: vec!["/root/.ssh/authorized_keys".into()],
                failed: vec!["/home/x/.ssh/authorized_keys".into()],
                unchecked: vec!["/home/app".into()],
                seed: vec!["/var/lib/cloud/instances/kiln-1".into()],
            }
        );
    }

    /// The cleanup script, run by a local shell on a copy of the files it
    /// would touch: only lines holding the blob go, options and all.
    #[test]
    fn cleanup_script_removes_exactly_the_key_lines() {
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join(".ssh");
        std::fs::create_dir(&ssh).unwrap();
        let file = ssh.join("authorized_keys");
        let blob = "AAAAC3NzaC1lZDI1NTE5AAAAIKiln";
        std::fs::write(
            &file,
            format!(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther user@host\n\
                 no-port-forwarding,command=\"echo 'Please login as the user \\\"ubuntu\\\"';exit 142\" ssh-ed25519 {blob} kiln\n\
                 ssh-ed25519 {blob} kiln\n\
                 ssh-ed25519 {blob}X not-the-same\n"
            ),
        )
        .unwrap();
        // The script's loop over homes, pointed at the temporary one.
        let script = CLEANUP_SCRIPT.replace(
            "$( (echo /root; cut -d: -f6 /etc/passwd) | sort -u)",
            &dir.path().display().to_string(),
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script, "kiln", blob, "kiln-none"])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("removed {}\n", file.display())
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther user@host\n\
                 ssh-ed25519 {blob}X not-the-same\n"
            )
        );
    }

    #[test]
    fn cleanup_command_quotes_its_arguments() {
        let command = cleanup_command("AAAA+/=", "kiln-1");
        assert!(command.contains("'AAAA+/=' 'kiln-1'"), "{command}");
        assert!(command.contains("sudo -n sh -c '"), "{command}");
    }
}
