//! The qemu builder's boot command, HTTP server and VNC settings.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// Packer's `http_port_min`.
pub const HTTP_PORT_MIN: u16 = 8000;
/// Packer's `http_port_max`.
pub const HTTP_PORT_MAX: u16 = 9000;
/// kiln's `http_bind_address`: the host's loopback, which QEMU's user
/// network shows the guest as 10.0.2.2 (Packer listens on 0.0.0.0).
pub const HTTP_BIND_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// `{{ .HTTPIP }}`: the host as QEMU's user network shows it to the guest.
pub const HTTP_IP: &str = "10.0.2.2";
/// Packer's `vnc_bind_address`.
pub const VNC_BIND_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Packer's `vnc_port_min`.
pub const VNC_PORT_MIN: u16 = 5900;
/// Packer's `vnc_port_max`.
pub const VNC_PORT_MAX: u16 = 6000;
/// QEMU's VNC display 0 listens on this port; display N on this plus N.
pub const VNC_DISPLAY_BASE: u16 = 5900;

/// `boot_command` and its timing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BootConfig {
    /// `boot_command`, as the template has it: `{{ .HTTPIP }}`,
    /// `{{ .HTTPPort }}` and `{{ .Name }}` are filled in at boot.
    pub command: Vec<String>,
    /// `boot_key_interval`; `None` leaves it to `PACKER_KEY_INTERVAL` or
    /// 100ms.
    pub key_interval: Option<Duration>,
    /// `boot_keygroup_interval`: accepted; Packer's qemu builder, which
    /// types over VNC, does not use it either.
    pub keygroup_interval: Option<Duration>,
}

/// The build's HTTP server.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// `http_directory`, absolute.
    pub directory: Option<PathBuf>,
    /// `http_content`: URL path (with its leading `/`) → text.
    pub content: BTreeMap<String, String>,
    /// `http_port_min`.
    pub port_min: u16,
    /// `http_port_max`.
    pub port_max: u16,
    /// `http_bind_address`.
    pub bind_address: IpAddr,
}

impl HttpConfig {
    /// Whether there is anything to serve (Packer starts no server
    /// otherwise, and `{{ .HTTPPort }}` is 0).
    pub fn enabled(&self) -> bool {
        self.directory.is_some() || !self.content.is_empty()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            directory: None,
            content: BTreeMap::new(),
            port_min: HTTP_PORT_MIN,
            port_max: HTTP_PORT_MAX,
            bind_address: HTTP_BIND_ADDRESS,
        }
    }
}

/// The guest's display over VNC, and the QEMU window.
#[derive(Debug, Clone, PartialEq)]
pub struct VncConfig {
    /// A VNC option (`vnc_bind_address`, `vnc_port_min`, `vnc_port_max`,
    /// `vnc_use_password`) is set.
    pub asked: bool,
    /// `disable_vnc`.
    pub disabled: bool,
    /// `vnc_bind_address`.
    pub bind_address: IpAddr,
    /// `vnc_port_min`.
    pub port_min: u16,
    /// `vnc_port_max`.
    pub port_max: u16,
    /// `vnc_use_password`: a random password, set over QMP and printed.
    pub use_password: bool,
    /// `display`: QEMU's `-display` for a build that is not headless.
    pub display: Option<String>,
    /// `use_default_display`: no `-display` at all.
    pub use_default_display: bool,
}

impl VncConfig {
    /// Whether the guest's display is served over VNC: as in Packer, for
    /// a build that is not headless; kiln also serves it to a headless
    /// build that sets a VNC option, and to none otherwise.
    pub fn exposed(&self, headless: bool) -> bool {
        !self.disabled && (!headless || self.asked)
    }
}

impl Default for VncConfig {
    fn default() -> Self {
        VncConfig {
            asked: false,
            disabled: false,
            bind_address: VNC_BIND_ADDRESS,
            port_min: VNC_PORT_MIN,
            port_max: VNC_PORT_MAX,
            use_password: false,
            display: None,
            use_default_display: false,
        }
    }
}
