//! Reading a disk of any format qemu understands through `qemu-nbd` on a
//! unix socket: a minimal NBD client (fixed newstyle handshake, NBD_OPT_GO,
//! simple replies to NBD_CMD_READ). Serving a socket needs no nbd kernel
//! module and no root.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::extents::{READ_CHUNK, ReadAt};
use super::tool::Killable;

const QEMU_NBD: &str = "qemu-nbd";
const START_TIMEOUT: Duration = Duration::from_secs(30);

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_ERROR_BIT: u32 = 1 << 31;
const INFO_EXPORT: u16 = 0;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const CMD_READ: u16 = 0;
const CMD_DISC: u16 = 2;

/// A failure to serve a disk with `qemu-nbd` or to read it over NBD.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    /// `qemu-nbd` could not be started.
    #[error("cannot start {QEMU_NBD}")]
    Spawn(#[source] io::Error),
    /// `qemu-nbd` exited before it served the disk.
    #[error("{QEMU_NBD} exited ({status}): {stderr}")]
    Exited {
        /// How it exited.
        status: String,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// `qemu-nbd` did not open its socket in time.
    #[error("{QEMU_NBD} did not listen within {}s", START_TIMEOUT.as_secs())]
    Timeout,
    /// The NBD handshake with `qemu-nbd` failed.
    #[error("NBD handshake failed")]
    Handshake(#[source] io::Error),
    /// Cancelled while starting or reading.
    #[error("cancelled")]
    Cancelled,
}

/// A read-only `qemu-nbd` serving one disk on a private socket; killed when
/// dropped, and by the kernel if kiln dies first.
pub struct NbdServer {
    child: Killable,
    socket: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl NbdServer {
    /// Starts `qemu-nbd` on `disk` read-only and waits until it listens.
    pub fn start(disk: &Path, format: &str) -> Result<NbdServer, NbdError> {
        // Whoever can reach the socket can read the disk.
        let dir = crate::tmp::private_dir("kiln-nbd-").map_err(NbdError::Spawn)?;
        let socket = dir.path().join("nbd.sock");
        let stderr = dir.path().join("stderr");
        let stderr_file = File::create(&stderr).map_err(NbdError::Spawn)?;
        let mut command = Command::new(QEMU_NBD);
        command
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--format={format}"))
            .args(["--read-only", "--persistent"])
            .arg("--")
            .arg(disk)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file);
        // Its own group, so a terminal's Ctrl-C goes to kiln, which then
        // ends the server itself; and it must not outlive kiln, even after
        // a SIGKILL.
        let child = Killable::spawn(&mut command).map_err(NbdError::Spawn)?;
        Ok(NbdServer {
            child,
            socket,
            stderr,
            _dir: dir,
        })
    }

    /// Connects once the server listens, or reports why it never will.
    pub fn connect(&mut self, cancel: Option<&CancellationToken>) -> Result<NbdClient, NbdError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if cancel.is_some_and(CancellationToken::is_cancelled) {
                return Err(NbdError::Cancelled);
            }
            if let Some(exited) = self.exited()? {
                return Err(exited);
            }
            match UnixStream::connect(&self.socket) {
                Ok(stream) => return self.handshake(stream),
                // Not bound or not listening yet.
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(err) if Instant::now() < deadline => {
                    return Err(NbdError::Handshake(err));
                }
                Err(_) => return Err(NbdError::Timeout),
            }
        }
    }
}

impl NbdServer {
    /// qemu-nbd listens before it opens the disk: a handshake cut short may
    /// just mean it could not open it, which its exit says better.
    fn handshake(&mut self, stream: UnixStream) -> Result<NbdClient, NbdError> {
        let error = match NbdClient::handshake(stream) {
            Ok(client) => return Ok(client),
            Err(error) => error,
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Some(exited) = self.exited()? {
                return Err(exited);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(NbdError::Handshake(error))
    }

    fn exited(&mut self) -> Result<Option<NbdError>, NbdError> {
        let Some(status) = self.child.child().try_wait().map_err(NbdError::Spawn)? else {
            return Ok(None);
        };
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        Ok(Some(NbdError::Exited {
            status: status.to_string(),
            stderr: stderr.trim().to_string(),
        }))
    }
}

/// One connection in the transmission phase.
pub(super) struct NbdClient {
    stream: UnixStream,
    size: u64,
    cookie: u64,
}

impl NbdClient {
    fn handshake(mut stream: UnixStream) -> io::Result<NbdClient> {
        if read_u64(&mut stream)? != NBDMAGIC || read_u64(&mut stream)? != IHAVEOPT {
            return Err(protocol("not a newstyle NBD server"));
        }
        let flags = read_u16(&mut stream)?;
        if flags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(protocol("server lacks fixed newstyle negotiation"));
        }
        let client_flags = u32::from(flags & (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
        stream.write_all(&client_flags.to_be_bytes())?;

        // NBD_OPT_GO for the default export "", asking for no extra info.
        let mut go = Vec::with_capacity(26);
        go.extend_from_slice(&IHAVEOPT.to_be_bytes());
        go.extend_from_slice(&OPT_GO.to_be_bytes());
        go.extend_from_slice(&6u32.to_be_bytes());
        go.extend_from_slice(&0u32.to_be_bytes());
        go.extend_from_slice(&0u16.to_be_bytes());
        stream.write_all(&go)?;

        let mut size = None;
        loop {
            if read_u64(&mut stream)? != REPLY_MAGIC {
                return Err(protocol("bad option reply magic"));
            }
            let _option = read_u32(&mut stream)?;
            let kind = read_u32(&mut stream)?;
            let len = read_u32(&mut stream)? as usize;
            let mut data = vec![0u8; len];
            stream.read_exact(&mut data)?;
            match kind {
                REP_ACK => break,
                REP_INFO if len >= 12 && u16::from_be_bytes([data[0], data[1]]) == INFO_EXPORT => {
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(&data[2..10]);
                    size = Some(u64::from_be_bytes(bytes));
                }
                REP_INFO => {}
                kind if kind & REP_ERROR_BIT != 0 => {
                    let message = String::from_utf8_lossy(&data).into_owned();
                    return Err(protocol(&format!("export refused ({kind:#x}): {message}")));
                }
                _ => return Err(protocol("unexpected option reply")),
            }
        }
        let size = size.ok_or_else(|| protocol("server did not tell the export size"))?;
        Ok(NbdClient {
            stream,
            size,
            cookie: 0,
        })
    }

    /// The disk's virtual size in bytes, as the server reported it.
    #[cfg(test)]
    pub fn size(&self) -> u64 {
        self.size
    }

    fn read_request(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.cookie += 1;
        self.send(CMD_READ, offset, buf.len() as u32)?;
        if read_u32(&mut self.stream)? != SIMPLE_REPLY_MAGIC {
            return Err(protocol("bad reply magic"));
        }
        let error = read_u32(&mut self.stream)?;
        if read_u64(&mut self.stream)? != self.cookie {
            return Err(protocol("reply to another request"));
        }
        if error != 0 {
            return Err(io::Error::other(format!(
                "NBD read of {} bytes at {offset} failed: error {error}",
                buf.len()
            )));
        }
        self.stream.read_exact(buf)
    }

    fn send(&mut self, command: u16, offset: u64, len: u32) -> io::Result<()> {
        let mut request = [0u8; 28];
        request[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        request[6..8].copy_from_slice(&command.to_be_bytes());
        request[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        request[16..24].copy_from_slice(&offset.to_be_bytes());
        request[24..28].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&request)
    }
}

impl ReadAt for NbdClient {
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let inside = self.size.saturating_sub(offset).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(inside);
        tail.fill(0);
        let mut done = 0;
        for piece in head.chunks_mut(READ_CHUNK) {
            self.read_request(piece, offset + done)?;
            done += piece.len() as u64;
        }
        Ok(())
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        // A polite goodbye; the server is killed right after anyway.
        let _ = self.send(CMD_DISC, 0, 0);
    }
}

fn protocol(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

fn read_u16(stream: &mut UnixStream) -> io::Result<u16> {
    let mut bytes = [0u8; 2];
    stream.read_exact(&mut bytes)?;
    Ok(u16::from_be_bytes(bytes))
}

fn read_u32(stream: &mut UnixStream) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    stream.read_exact(&mut bytes)?;
    Ok(u32::from_be_bytes(bytes))
}

fn read_u64(stream: &mut UnixStream) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    stream.read_exact(&mut bytes)?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_qcow2_through_qemu_nbd() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.qcow2");
        let ok = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("8M")
            .status()
            .expect("qemu-img is needed for this test");
        assert!(ok.success());
        let ok = Command::new("qemu-io")
            .args(["-c", "write -P 0xab 1M 64k"])
            .arg(&disk)
            .stdout(Stdio::null())
            .status()
            .expect("qemu-io is needed for this test");
        assert!(ok.success());
        let mut server = NbdServer::start(&disk, "qcow2").unwrap();
        let mut client = server.connect(None).unwrap();
        assert_eq!(client.size(), 8 << 20);
        let mut buf = vec![0u8; 128 << 10];
        client
            .read_exact_at(&mut buf, (1 << 20) - (32 << 10))
            .unwrap();
        assert!(buf[..32 << 10].iter().all(|&b| b == 0));
        assert!(buf[32 << 10..96 << 10].iter().all(|&b| b == 0xab));
        assert!(buf[96 << 10..].iter().all(|&b| b == 0));
        // Past the end reads as zeros rather than failing.
        buf.fill(1);
        client.read_exact_at(&mut buf, (8 << 20) - 512).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn a_server_that_cannot_open_the_disk_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("not.qcow2");
        std::fs::write(&disk, b"plain text").unwrap();
        let mut server = NbdServer::start(&disk, "qcow2").unwrap();
        let err = server.connect(None).err().unwrap();
        assert!(matches!(err, NbdError::Exited { .. }), "{err}");
    }
}
