//! Local stand-ins for Google Cloud that kiln's tests (`tests/`) run
//! against: the real Cloud Storage emulators started on free ports, a TCP
//! proxy that injects faults, a file server for downloads, a Compute API fake that validates like GCE, an
//! OAuth token server, and a small valid GCE image tarball.

pub mod compute_fake;
pub mod emulators;
pub mod fault_proxy;
pub mod file_server;
pub mod tarball;
pub mod token_server;

/// A free TCP port on 127.0.0.1. The port is released before use, so
/// another process could take it; good enough for tests on one machine.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The test service account's RSA key pair (made for these tests only,
/// never registered anywhere).
pub const TEST_PRIVATE_KEY_PEM: &str = include_str!("data/test-key.pem");
pub const TEST_PUBLIC_KEY_PEM: &str = include_str!("data/test-key.pub.pem");
