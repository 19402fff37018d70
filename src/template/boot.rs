//! The qemu builder's `boot_command`, HTTP server and VNC options.
//!
//! A boot command is checked here, with `{{ .HTTPIP }}`, `{{ .HTTPPort }}`
//! and `{{ .Name }}` filled with stand-ins, so a bad key fails validation
//! instead of the build minutes later.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use super::decode::Obj;
use super::paths;
use crate::plan::boot::{self, BootConfig, HttpConfig, VncConfig};
use crate::plan::render_late;

/// Reads `boot_command`, `boot_key_interval` and
/// `boot_keygroup_interval`; the command is parsed to find bad keys.
pub(super) fn boot(o: &mut Obj<'_>, vm_name: &str) -> BootConfig {
    let command = o.string_list("boot_command").unwrap_or_default();
    let stand_ins = [
        ("HTTPIP", boot::HTTP_IP),
        ("HTTPPort", "8000"),
        ("Name", vm_name),
    ];
    let rendered: Vec<String> = command
        .iter()
        .map(|entry| render_late(entry, &stand_ins))
        .collect();
    if let Err(err) = crate::bootcmd::parse(&rendered) {
        o.cx().problem(
            format!("{}[{}]", o.key_path("boot_command"), err.entry),
            err.reason,
        );
    }
    BootConfig {
        command,
        key_interval: o.duration("boot_key_interval"),
        keygroup_interval: o.duration("boot_keygroup_interval"),
    }
}

/// Reads the `http_*` options.
pub(super) fn http(o: &mut Obj<'_>, cwd: &Path) -> HttpConfig {
    let directory = o.non_empty_string("http_directory").and_then(|dir| {
        let path = paths::resolve(cwd, &dir);
        if path.is_dir() {
            Some(path)
        } else {
            o.cx().problem(
                o.key_path("http_directory"),
                format!("directory not found: {}", path.display()),
            );
            None
        }
    });
    let content: BTreeMap<String, String> = o
        .string_map("http_content")
        .unwrap_or_default()
        .into_iter()
        .map(|(path, text)| {
            let path = if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            };
            (path, text)
        })
        .collect();
    if o.has("http_directory") && o.has("http_content") {
        o.cx().problem(
            o.key_path("http_content"),
            "only one of http_directory or http_content may be set",
        );
    }
    let port_min = port(o, "http_port_min", boot::HTTP_PORT_MIN);
    let port_max = port(o, "http_port_max", boot::HTTP_PORT_MAX);
    if port_min > port_max {
        o.cx().problem(
            o.key_path("http_port_min"),
            format!("must not be above http_port_max ({port_min} > {port_max})"),
        );
    }
    let bind_address = address(o, "http_bind_address", boot::HTTP_BIND_ADDRESS);
    if o.has("http_interface") {
        o.cx().problem(
            o.key_path("http_interface"),
            "is not supported; use http_bind_address (the guest reaches the server at {{ .HTTPIP }} either way)",
        );
    }
    o.allow(&["http_interface"]);
    HttpConfig {
        directory,
        content,
        port_min,
        port_max,
        bind_address,
    }
}

/// Reads the VNC and display options.
pub(super) fn vnc(o: &mut Obj<'_>) -> VncConfig {
    let asked = [
        "vnc_bind_address",
        "vnc_port_min",
        "vnc_port_max",
        "vnc_use_password",
    ]
    .iter()
    .any(|key| o.has(key));
    let bind_address = address(o, "vnc_bind_address", boot::VNC_BIND_ADDRESS);
    let port_min = port(o, "vnc_port_min", boot::VNC_PORT_MIN);
    let port_max = port(o, "vnc_port_max", boot::VNC_PORT_MAX);
    if port_min < boot::VNC_DISPLAY_BASE {
        o.cx().problem(
            o.key_path("vnc_port_min"),
            format!(
                "must be at least {} (QEMU's VNC display 0 listens there), got {port_min}",
                boot::VNC_DISPLAY_BASE
            ),
        );
    }
    if port_min > port_max {
        o.cx().problem(
            o.key_path("vnc_port_min"),
            format!("must not be above vnc_port_max ({port_min} > {port_max})"),
        );
    }
    VncConfig {
        asked,
        disabled: o.bool("disable_vnc").unwrap_or(false),
        bind_address,
        port_min,
        port_max,
        use_password: o.bool("vnc_use_password").unwrap_or(false),
        display: o.non_empty_string("display"),
        use_default_display: o.bool("use_default_display").unwrap_or(false),
    }
}

fn port(o: &mut Obj<'_>, key: &'static str, default: u16) -> u16 {
    o.int(key, 0, 65535)
        .and_then(|n| u16::try_from(n).ok())
        // Zero is Packer's "unset".
        .filter(|n| *n != 0)
        .unwrap_or(default)
}

fn address(o: &mut Obj<'_>, key: &'static str, default: IpAddr) -> IpAddr {
    match o.non_empty_string(key) {
        None => default,
        Some(text) => text.parse().unwrap_or_else(|_| {
            o.cx().problem(
                o.key_path(key),
                format!("expected an IP address such as 127.0.0.1 or 0.0.0.0, got {text:?}"),
            );
            default
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use crate::plan::QemuConfig;
    use crate::template::{Overrides, TemplateError, load};

    fn load_builder(
        dir: &std::path::Path,
        extra: serde_json::Value,
    ) -> Result<QemuConfig, Vec<(String, String)>> {
        let mut builder = json!({
            "type": "qemu",
            "iso_url": "/images/base.qcow2",
            "iso_checksum": "none",
            "ssh_username": "root",
        });
        for (k, v) in extra.as_object().unwrap() {
            builder[k] = v.clone();
        }
        let path = dir.join("template.json");
        std::fs::write(&path, json!({ "builders": [builder] }).to_string()).unwrap();
        match load(&path, &Overrides::default()) {
            Ok(plan) => Ok(plan.builds[0].qemu.clone()),
            Err(TemplateError::Invalid { problems, .. }) => {
                Err(problems.into_iter().map(|p| (p.path, p.message)).collect())
            }
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn boot_http_and_vnc_options_are_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("http")).unwrap();
        let q = load_builder(
            dir.path(),
            json!({
                "boot_command": ["<esc><wait>", "linux ks=http://{{ .HTTPIP }}:{{ .HTTPPort }}/ks.cfg<enter>"],
                "boot_key_interval": "20ms",
                "boot_keygroup_interval": "1s",
                // Relative paths are taken from the working directory, as
                // in Packer.
                "http_directory": dir.path().join("http"),
                "http_port_min": 8100,
                "http_port_max": 8200,
                "vnc_port_min": 5901,
                "vnc_use_password": true,
            }),
        )
        .unwrap();
        assert_eq!(
            q.boot.command[1],
            "linux ks=http://{{ .HTTPIP }}:{{ .HTTPPort }}/ks.cfg<enter>"
        );
        assert_eq!(q.boot.key_interval, Some(Duration::from_millis(20)));
        assert_eq!(q.http.directory, Some(dir.path().join("http")));
        assert_eq!((q.http.port_min, q.http.port_max), (8100, 8200));
        assert_eq!(q.http.bind_address.to_string(), "127.0.0.1");
        assert!(q.http.enabled());
        assert!(q.vnc.asked && q.vnc.use_password);
        assert_eq!((q.vnc.port_min, q.vnc.port_max), (5901, 6000));
        assert!(q.vnc.exposed(true));

        let plain = load_builder(dir.path(), json!({"headless": true})).unwrap();
        assert!(!plain.http.enabled());
        assert!(!plain.vnc.exposed(true));
        assert!(plain.vnc.exposed(false));

        let content = load_builder(dir.path(), json!({"http_content": {"ks.cfg": "x"}})).unwrap();
        assert_eq!(
            content.http.content.get("/ks.cfg").map(String::as_str),
            Some("x")
        );
    }

    #[test]
    fn bad_options_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let got = load_builder(
            dir.path(),
            json!({
                "boot_command": ["<wait>", "ok", "<leftCtrlOn>x<leftCtrlOff>", "text<entre>"],
                "http_directory": "nowhere",
                "http_content": {"a": "b"},
                "http_port_min": 9000,
                "http_port_max": 8000,
                "http_bind_address": "localhost",
                "vnc_port_min": 5000,
            }),
        )
        .unwrap_err();
        let at = |path: &str| {
            got.iter()
                .find(|(p, _)| p == path)
                .map(|(_, m)| m.clone())
                .unwrap_or_else(|| panic!("no problem at {path}: {got:?}"))
        };
        assert!(at("builders[0].boot_command[3]").starts_with("unknown key <entre>"));
        assert!(at("builders[0].http_directory").starts_with("directory not found"));
        assert!(at("builders[0].http_content").contains("only one of"));
        assert!(at("builders[0].http_port_min").contains("9000 > 8000"));
        assert!(at("builders[0].http_bind_address").contains("\"localhost\""));
        assert!(at("builders[0].vnc_port_min").contains("at least 5900"));

        let waits = load_builder(dir.path(), json!({"boot_command": ["<wait0>"]})).unwrap_err();
        assert_eq!(waits[0].0, "builders[0].boot_command[0]");
        assert!(waits[0].1.contains("positive"), "{waits:?}");
    }
}
