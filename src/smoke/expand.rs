//! What each check runs in the guest: the declarative kinds become small
//! POSIX shell scripts that print why they fail on stderr and exit 1.

use crate::plan::{CheckKind, PortProtocol};
use crate::ssh::shell_quote;

/// A check as the guest runs it.
#[derive(Debug, Clone, PartialEq)]
pub enum GuestCommand {
    /// Run with `sh -c` (the SSH exec channel's shell).
    Shell(String),
    /// A local script to upload and run (its own shebang applies).
    Upload(std::path::PathBuf),
}

/// What the guest runs for a check of kind `kind`.
pub fn expand(kind: &CheckKind) -> GuestCommand {
    match kind {
        CheckKind::Inline(lines) => {
            let mut script = String::from("set -e\n");
            for line in lines {
                script.push_str(line);
                script.push('\n');
            }
            GuestCommand::Shell(script)
        }
        CheckKind::Script(path) => GuestCommand::Upload(path.clone()),
        CheckKind::Command(command) => GuestCommand::Shell(command.clone()),
        CheckKind::File {
            path,
            exists,
            mode,
            owner,
            group,
            contains,
        } => GuestCommand::Shell(file_script(
            path,
            *exists,
            mode.as_deref(),
            owner.as_deref(),
            group.as_deref(),
            contains.as_deref(),
        )),
        CheckKind::Service {
            name,
            active,
            enabled,
        } => GuestCommand::Shell(service_script(name, *active, *enabled)),
        CheckKind::Port {
            port,
            protocol,
            listening,
        } => GuestCommand::Shell(port_script(*port, *protocol, *listening)),
        CheckKind::Package { name, installed } => {
            GuestCommand::Shell(package_script(name, *installed))
        }
    }
}

const FAIL: &str = "fail() { echo \"$*\" >&2; exit 1; }\n";

fn file_script(
    path: &str,
    exists: bool,
    mode: Option<&str>,
    owner: Option<&str>,
    group: Option<&str>,
    contains: Option<&str>,
) -> String {
    let mut s = format!("{FAIL}p={}\n", shell_quote(path));
    if !exists {
        s.push_str("[ ! -e \"$p\" ] && [ ! -L \"$p\" ] || fail \"$p exists\"\n");
        return s;
    }
    s.push_str("[ -e \"$p\" ] || fail \"$p does not exist\"\n");
    if let Some(mode) = mode {
        s.push_str(&format!(
            "w={0}; m=$(stat -c %a \"$p\") && [ \"$m\" = \"$w\" ] || fail \"$p has mode $m, expected $w\"\n",
            shell_quote(mode)
        ));
    }
    if let Some(owner) = owner {
        s.push_str(&format!(
            "w={0}; o=$(stat -c %U \"$p\") && [ \"$o\" = \"$w\" ] || fail \"$p is owned by $o, expected $w\"\n",
            shell_quote(owner)
        ));
    }
    if let Some(group) = group {
        s.push_str(&format!(
            "w={0}; g=$(stat -c %G \"$p\") && [ \"$g\" = \"$w\" ] || fail \"$p has group $g, expected $w\"\n",
            shell_quote(group)
        ));
    }
    if let Some(text) = contains {
        s.push_str(&format!(
            "w={0}; grep -qF -e \"$w\" \"$p\" || fail \"$p does not contain: $w\"\n",
            shell_quote(text)
        ));
    }
    s
}

fn service_script(name: &str, active: Option<bool>, enabled: Option<bool>) -> String {
    let mut s = format!(
        "{FAIL}command -v systemctl >/dev/null 2>&1 || fail \"service checks need systemd, and this guest has no systemctl\"\n\
         u={}\n",
        shell_quote(name)
    );
    if let Some(active) = active {
        let (want, test) = if active {
            ("active", "=")
        } else {
            ("inactive", "!=")
        };
        s.push_str(&format!(
            "st=$(systemctl is-active \"$u\" 2>/dev/null || true); [ \"$st\" {test} active ] || fail \"$u is ${{st:-unknown}}, expected {want}\"\n"
        ));
    }
    if let Some(enabled) = enabled {
        let (want, test) = if enabled {
            ("enabled", "=")
        } else {
            ("disabled", "!=")
        };
        s.push_str(&format!(
            "en=$(systemctl is-enabled \"$u\" 2>/dev/null || true); [ \"$en\" {test} enabled ] || fail \"$u is ${{en:-unknown}}, expected {want}\"\n"
        ));
    }
    s
}

/// Reads /proc/net directly: it works on every Linux guest, with or
/// without ss or netstat.
fn port_script(port: u16, protocol: PortProtocol, listening: bool) -> String {
    let (files, state, name) = match protocol {
        // 0A: TCP_LISTEN; an unconnected UDP socket shows 07 (TCP_CLOSE).
        PortProtocol::Tcp => ("/proc/net/tcp /proc/net/tcp6", "0A", "tcp"),
        PortProtocol::Udp => ("/proc/net/udp /proc/net/udp6", "07", "udp"),
    };
    let (test, want) = if listening {
        ("", "is not listening")
    } else {
        ("!", "is listening")
    };
    format!(
        "{FAIL}hex=$(printf '%04X' {port})\n\
         if {test} cat {files} 2>/dev/null | awk -v p=\":$hex\" -v s={state} \
         'NR > 0 && $4 == s && substr($2, length($2) - 4) == p {{ found = 1 }} END {{ exit !found }}'; \
         then :; else fail \"{name} port {port} {want}\"; fi\n"
    )
}

fn package_script(name: &str, installed: bool) -> String {
    let want = if installed { "" } else { "!" };
    let says = if installed {
        "is not installed"
    } else {
        "is installed"
    };
    format!(
        "{FAIL}pkg={}\n\
         if command -v dpkg-query >/dev/null 2>&1; then\n\
         \x20 has() {{ dpkg-query -W -f='${{Status}}' \"$pkg\" 2>/dev/null | grep -q 'install ok installed'; }}\n\
         elif command -v rpm >/dev/null 2>&1; then\n\
         \x20 has() {{ rpm -q \"$pkg\" >/dev/null 2>&1; }}\n\
         else\n\
         \x20 fail \"package checks need dpkg or rpm, and this guest has neither\"\n\
         fi\n\
         if {want} has; then :; else fail \"package $pkg {says}\"; fi\n",
        shell_quote(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(kind: CheckKind) -> String {
        match expand(&kind) {
            GuestCommand::Shell(s) => s,
            other => panic!("expected a shell command, got {other:?}"),
        }
    }

    /// Runs a generated script with the host's sh.
    fn run(script: &str) -> (i32, String) {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn file_checks_pass_and_fail_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("it's here.conf");
        std::fs::write(&path, "listen = 8080\n").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .unwrap();
        let p = path.display().to_string();
        let file = |exists, mode: Option<&str>, contains: Option<&str>| CheckKind::File {
            path: p.clone(),
            exists,
            mode: mode.map(String::from),
            owner: None,
            group: None,
            contains: contains.map(String::from),
        };
        assert_eq!(run(&shell(file(true, Some("640"), Some("= 80")))).0, 0);
        let (code, why) = run(&shell(file(true, Some("644"), None)));
        assert_eq!(code, 1);
        assert!(why.contains("has mode 640, expected 644"), "{why}");
        let (code, why) = run(&shell(file(true, None, Some("9090"))));
        assert_eq!(code, 1);
        assert!(why.contains("does not contain"), "{why}");
        let (code, why) = run(&shell(file(false, None, None)));
        assert_eq!(code, 1);
        assert!(why.contains("exists"), "{why}");
        let gone = CheckKind::File {
            path: dir.path().join("nope").display().to_string(),
            exists: true,
            mode: None,
            owner: None,
            group: None,
            contains: None,
        };
        let (code, why) = run(&shell(gone));
        assert_eq!(code, 1);
        assert!(why.contains("does not exist"), "{why}");
    }

    #[test]
    fn port_checks_read_proc_net() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let check = |listening| CheckKind::Port {
            port,
            protocol: PortProtocol::Tcp,
            listening,
        };
        assert_eq!(run(&shell(check(true))).0, 0);
        let (code, why) = run(&shell(check(false)));
        assert_eq!(code, 1);
        assert!(
            why.contains(&format!("tcp port {port} is listening")),
            "{why}"
        );
        drop(listener);
        let (code, why) = run(&shell(check(true)));
        assert_eq!(code, 1);
        assert!(why.contains("is not listening"), "{why}");

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_check = CheckKind::Port {
            port: udp.local_addr().unwrap().port(),
            protocol: PortProtocol::Udp,
            listening: true,
        };
        assert_eq!(run(&shell(udp_check)).0, 0);
    }

    #[test]
    fn package_checks_use_dpkg() {
        let installed = CheckKind::Package {
            name: "dpkg".into(),
            installed: true,
        };
        assert_eq!(run(&shell(installed)).0, 0);
        let missing = CheckKind::Package {
            name: "no-such-package-kiln".into(),
            installed: true,
        };
        let (code, why) = run(&shell(missing));
        assert_eq!(code, 1);
        assert!(why.contains("is not installed"), "{why}");
    }

    #[test]
    fn service_checks_say_when_there_is_no_systemd() {
        let script = shell(CheckKind::Service {
            name: "ssh".into(),
            active: Some(true),
            enabled: None,
        });
        // Run with a PATH where systemctl cannot be found.
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .env("PATH", "/nonexistent")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("need systemd"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn inline_checks_stop_at_the_first_failure() {
        let (code, _) = run(&shell(CheckKind::Inline(vec![
            "false".into(),
            "exit 0".into(),
        ])));
        assert_eq!(code, 1);
    }
}
