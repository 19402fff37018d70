//! Against a real OpenSSH server started on a free local port.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::exec::Lines;
use super::*;

const SSHD: &str = "/usr/sbin/sshd";
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// One sshd, killed on drop. It accepts one client key.
struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    client_key: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn username() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// Writes keys and a config for a server on `port`; `sftp` decides
/// whether it offers the SFTP subsystem.
fn prepare(port: u16, sftp: bool) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = generate_key(dir.path(), false).expect("host key");
    let client_dir = dir.path().join("client");
    std::fs::create_dir(&client_dir).expect("mkdir");
    let client = generate_key(&client_dir, false).expect("client key");
    let authorized = dir.path().join("authorized_keys");
    std::fs::write(&authorized, format!("{}\n", client.public_key_openssh)).expect("write");
    let subsystem = if sftp {
        format!("Subsystem sftp {SFTP_SERVER}\n")
    } else {
        String::new()
    };
    let config = dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1:{port}\n\
             HostKey {}\n\
             AuthorizedKeysFile {}\n\
             StrictModes no\n\
             UsePAM no\n\
             PidFile none\n\
             PermitRootLogin yes\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UseDNS no\n\
             LogLevel ERROR\n\
             {subsystem}",
            host.private_key_path.display(),
            authorized.display()
        ),
    )
    .expect("write config");
    // sshd insists on its privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    (dir, config, client.private_key_path)
}

fn spawn_sshd(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log");
    Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sshd (package openssh-server)")
}

/// Only keeps a broken sshd from hanging the test; a slow start is fine.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// Until sshd listens, or says why it will not.
fn wait_listening(child: &mut Child, port: u16, log: &Path) {
    let mut waited = Duration::ZERO;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("sshd exited with {status}:\n{log}");
        }
        assert!(waited < HANG_GUARD, "sshd never listened on {port}");
        std::thread::sleep(Duration::from_millis(10));
        waited += Duration::from_millis(10);
    }
}

fn start(sftp: bool) -> Sshd {
    let port = free_port();
    let (dir, config, client_key) = prepare(port, sftp);
    let log = dir.path().join("sshd.log");
    let mut child = spawn_sshd(&config, &log);
    wait_listening(&mut child, port, &log);
    Sshd {
        child,
        port,
        dir,
        client_key,
    }
}

fn config(port: u16, key: &Path) -> SshConfig {
    SshConfig {
        host: "127.0.0.1".to_string(),
        port,
        username: username(),
        auth: Auth::KeyFile(key.to_path_buf()),
        timeout: Duration::from_secs(10),
        handshake_attempts: 10,
        pty: false,
    }
}

async fn session(server: &Sshd) -> Session {
    Session::connect(&config(server.port, &server.client_key))
        .await
        .expect("connect")
}

async fn run(session: &Session, command: &str) -> (ExitStatus, Vec<(Stream, String)>) {
    let mut lines = Vec::new();
    let status = session
        .exec(command, &mut |stream, line| {
            lines.push((stream, line.to_string()))
        })
        .await
        .expect("exec");
    (status, lines)
}

/// Provisioners hold sessions across awaits in spawned tasks.
#[test]
fn sessions_and_their_futures_are_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    fn check(session: &Session, local: &Path) {
        send(&session.exec("true", &mut |_, _| {}));
        send(&session.upload(local, "/x"));
        send(&session.download("/x", local));
        send(&session.upload_bytes(b"", "/x", 0o644));
        send(&session.is_dir("/x"));
    }
    let _ = check;
    let _ = send_sync::<Session>;
}

#[test]
fn generated_key_is_private_and_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = generate_key(dir.path(), false).expect("generate");
    let mode = std::fs::metadata(&key.private_key_path)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(key.public_key_openssh.starts_with("ssh-ed25519 AAAA"));
    assert!(key.public_key_openssh.ends_with(" kiln"));
    assert!(!key.public_key_openssh.contains('\n'));
    let text = std::fs::read_to_string(&key.private_key_path).expect("read");
    assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    keys::load_private(&key.private_key_path).expect("loads back");
}

#[test]
fn missing_key_file_is_a_key_error() {
    let cfg = config(1, Path::new("/nonexistent/kiln-key"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    match runtime.block_on(Session::connect(&cfg)) {
        Err(SshError::Key { path, .. }) => assert_eq!(path, Path::new("/nonexistent/kiln-key")),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("connected without a key"),
    }
}

#[test]
fn lines_split_strip_and_flush() {
    let mut lines = Lines::default();
    let mut seen = Vec::new();
    lines.push(b"a\r\nb", &mut |l| seen.push(l.to_string()));
    lines.push(b"c\n\nd\xff", &mut |l| seen.push(l.to_string()));
    lines.finish(&mut |l| seen.push(l.to_string()));
    assert_eq!(seen, ["a", "bc", "", "d\u{fffd}"]);
}

#[test]
fn quoting_survives_the_shell() {
    let name = "it's a \"test\" $HOME `x` \\";
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s {}", transfer::shell_quote(name)))
        .output()
        .expect("sh");
    assert_eq!(String::from_utf8_lossy(&out.stdout), name);
}

#[tokio::test]
async fn generated_ed25519_and_rsa_keys_authenticate() {
    let server = start(true);
    for rsa in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = generate_key(dir.path(), rsa).expect("generate");
        if rsa {
            assert!(key.public_key_openssh.starts_with("ssh-rsa AAAA"));
        }
        let authorized = server.dir.path().join("authorized_keys");
        let mut text = std::fs::read_to_string(&authorized).expect("read");
        text.push_str(&format!("{}\n", key.public_key_openssh));
        std::fs::write(&authorized, text).expect("write");
        let session = Session::connect(&config(server.port, &key.private_key_path))
            .await
            .expect("connect with the generated key");
        let (status, _) = run(&session, "true").await;
        assert_eq!(status, ExitStatus::Code(0));
        session.close().await;
    }
}

#[tokio::test]
async fn connect_waits_for_a_server_that_starts_late() {
    let port = free_port();
    let (dir, sshd_config, key) = prepare(port, true);
    let mut cfg = config(port, &key);
    // A deadline the test never gets near: the client must keep trying
    // through the refusals and hang-ups below, however slow the machine.
    cfg.timeout = HANG_GUARD;
    let connecting = tokio::spawn(async move { Session::connect(&cfg).await });
    // Nothing listens for a while, then something that accepts and hangs
    // up at once (QEMU's port forward before the guest's sshd is up),
    // until the client has come back after a hang-up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fake = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let hung_up = tokio::task::spawn_blocking(move || {
        for _ in 0..2 {
            let (stream, _) = fake.accept().expect("accept");
            drop(stream);
        }
    });
    tokio::time::timeout(HANG_GUARD, hung_up)
        .await
        .expect("the client did not come back after the port hung up")
        .expect("join");
    let log = dir.path().join("sshd.log");
    let mut child = spawn_sshd(&sshd_config, &log);
    wait_listening(&mut child, port, &log);
    let server = Sshd {
        child,
        port,
        dir,
        client_key: key,
    };
    let session = connecting
        .await
        .expect("join")
        .expect("connects once sshd is up");
    let (status, _) = run(&session, "true").await;
    assert_eq!(status, ExitStatus::Code(0));
    session.close().await;
    drop(server);
}

#[tokio::test]
async fn connect_times_out_with_the_last_error() {
    // The first connection is accepted and hung up, then nothing listens:
    // the client must not stop at the first failure, and must report the
    // refusals that came last, not the hang-up.
    let fake = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = fake.local_addr().expect("addr").port();
    let hung_up = std::thread::spawn(move || {
        let (stream, _) = fake.accept().expect("accept");
        drop(stream);
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let key = generate_key(dir.path(), false).expect("key");
    let mut cfg = config(port, &key.private_key_path);
    cfg.timeout = Duration::from_secs(5);
    let result = Session::connect(&cfg).await;
    hung_up.join().expect("the client never connected");
    match result {
        Err(SshError::Timeout { last_error, .. }) => {
            let last = last_error.expect("a last error");
            assert!(last.contains("refused"), "{last}");
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("connected to nothing"),
    }
}

/// QEMU's port forward accepts at once and holds the connection while the
/// guest's network is not up: such a silent connection is dropped and made
/// anew, so the session comes up soon after sshd does, not at the next
/// retransmission of a stale SYN.
#[tokio::test]
async fn silent_connections_are_abandoned_and_made_anew() {
    let fake = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = fake.local_addr().expect("addr").port();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = std::thread::spawn({
        let done = done.clone();
        move || {
            fake.set_nonblocking(true).expect("nonblocking");
            let mut held = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok((stream, _)) = fake.accept() {
                    held.push(stream);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            held.len()
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let key = generate_key(dir.path(), false).expect("key");
    let mut cfg = config(port, &key.private_key_path);
    // Shorter than one attempt's own limit (30 s): a client that waited on
    // its silent connection would make just one in the whole timeout.
    cfg.timeout = Duration::from_secs(6);
    let result = Session::connect(&cfg).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    match result {
        Err(SshError::Timeout { last_error, .. }) => {
            assert_eq!(last_error.as_deref(), Some("no answer from the server"));
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("connected to a silent listener"),
    }
    let connections = held.join().expect("listener");
    assert!(
        connections >= 2,
        "only {connections} connection(s): a silent one was waited on instead of made anew"
    );
}

#[tokio::test]
async fn wrong_key_is_rejected() {
    let server = start(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let stranger = generate_key(dir.path(), false).expect("key");
    // Stops after handshake_attempts rejections: with a deadline an hour
    // away, returning at all says it did not wait for the deadline.
    let mut cfg = config(server.port, &stranger.private_key_path);
    cfg.handshake_attempts = 2;
    cfg.timeout = Duration::from_secs(3600);
    let rejected = tokio::time::timeout(HANG_GUARD, Session::connect(&cfg))
        .await
        .expect("still retrying after handshake_attempts rejections");
    match rejected {
        Err(SshError::AuthRejected { username }) => assert_eq!(username, cfg.username),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a stranger got in"),
    }
    // ...or at the deadline when they are not limited.
    cfg.handshake_attempts = 0;
    cfg.timeout = Duration::from_millis(1500);
    match Session::connect(&cfg).await {
        Err(SshError::AuthRejected { .. }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a stranger got in"),
    }
}

#[tokio::test]
async fn exec_streams_lines_and_exit_codes() {
    let server = start(true);
    let session = session(&server).await;
    let (status, lines) = run(
        &session,
        "echo out1; echo err1 >&2; printf 'out2\\r\\n'; printf partial",
    )
    .await;
    assert_eq!(status, ExitStatus::Code(0));
    // stdout and stderr are two SSH streams: each keeps its own order, but
    // how they interleave depends on scheduling, so each is checked alone.
    let of = |stream: Stream| -> Vec<&str> {
        lines
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, line)| line.as_str())
            .collect()
    };
    assert_eq!(of(Stream::Stdout), ["out1", "out2", "partial"]);
    assert_eq!(of(Stream::Stderr), ["err1"]);
    for code in [1, 42] {
        let (status, _) = run(&session, &format!("exit {code}")).await;
        assert_eq!(status, ExitStatus::Code(code));
    }
    let (status, _) = run(&session, "kill -TERM $$").await;
    assert_eq!(status, ExitStatus::Signal("TERM".to_string()));
    session.close().await;
}

#[tokio::test]
async fn exec_with_a_pty() {
    let server = start(true);
    let mut cfg = config(server.port, &server.client_key);
    cfg.pty = true;
    let session = Session::connect(&cfg).await.expect("connect");
    let (status, lines) = run(&session, "test -t 1 && echo tty").await;
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(lines, [(Stream::Stdout, "tty".to_string())]);
    session.close().await;
}

#[tokio::test]
async fn execs_run_concurrently() {
    let server = start(true);
    let session = session(&server).await;
    // Each command leaves its marker, then waits for the other's: both
    // succeed only if they run at the same time. Run one after the other,
    // the first gives up (exit 9) after the guard, the second succeeds.
    let dir = server.dir.path().display().to_string();
    let guard = HANG_GUARD.as_secs() * 10;
    let command = |mine: &str, theirs: &str, code: u8| {
        format!(
            "touch '{dir}/{mine}'; i=0; while [ ! -e '{dir}/{theirs}' ]; do \
             i=$((i + 1)); [ $i -le {guard} ] || exit 9; sleep 0.1; done; exit {code}"
        )
    };
    let (first, second) = (command("a", "b", 3), command("b", "a", 4));
    let (a, b) = tokio::join!(run(&session, &first), run(&session, &second));
    assert_eq!(
        (a.0, b.0),
        (ExitStatus::Code(3), ExitStatus::Code(4)),
        "exit 9: one command never saw the other running"
    );
    session.close().await;
}

#[tokio::test]
async fn a_command_that_drops_its_connection_is_disconnected() {
    let server = start(true);
    let session = session(&server).await;
    // $PPID is the sshd process serving this connection.
    let (status, _) = run(&session, "echo bye; kill -9 $PPID").await;
    assert_eq!(status, ExitStatus::Disconnected);
    session.close().await;
}

#[tokio::test]
async fn transfers_over_sftp() {
    let server = start(true);
    let session = session(&server).await;
    transfers(&session, &server).await;
    assert!(matches!(
        session.transport.get(),
        Some(transfer::Transport::Sftp(_))
    ));
    session.close().await;
}

#[tokio::test]
async fn transfers_over_exec_without_sftp() {
    let server = start(false);
    let session = session(&server).await;
    transfers(&session, &server).await;
    assert!(matches!(
        session.transport.get(),
        Some(transfer::Transport::Shell)
    ));
    session.close().await;
}

/// The server runs on this machine: the remote side is checked directly.
async fn transfers(session: &Session, server: &Sshd) {
    let remote_root = server.dir.path().join("remote");
    std::fs::create_dir(&remote_root).expect("mkdir");
    let remote = |name: &str| format!("{}/{name}", remote_root.display());
    let local = tempfile::tempdir().expect("tempdir");

    // Bytes, with a mode, into a name that needs quoting.
    let target = remote("it's bytes.bin");
    session
        .upload_bytes(b"hello\x00world", &target, 0o600)
        .await
        .expect("upload_bytes");
    assert_eq!(std::fs::read(&target).expect("read"), b"hello\x00world");
    assert_eq!(mode_of(Path::new(&target)), 0o600);
    // Overwriting truncates and sets the new mode.
    session
        .upload_bytes(b"hi", &target, 0o640)
        .await
        .expect("upload_bytes again");
    assert_eq!(std::fs::read(&target).expect("read"), b"hi");
    assert_eq!(mode_of(Path::new(&target)), 0o640);

    // A file larger than any buffer along the way.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 255) as u8).collect();
    let big_local = local.path().join("big.bin");
    std::fs::write(&big_local, &big).expect("write");
    std::fs::set_permissions(&big_local, std::fs::Permissions::from_mode(0o751)).expect("chmod");
    session
        .upload(&big_local, &remote("big.bin"))
        .await
        .expect("upload");
    assert!(std::fs::read(remote("big.bin")).expect("read") == big);
    assert_eq!(mode_of(Path::new(&remote("big.bin"))), 0o751);
    let back = local.path().join("big.back");
    session
        .download(&remote("big.bin"), &back)
        .await
        .expect("download");
    assert!(std::fs::read(&back).expect("read") == big);
    assert_eq!(mode_of(&back), 0o751);

    // A tree: nested, empty and read-only directories, modes.
    let tree = local.path().join("tree");
    for dir in ["a/b", "empty", "ro"] {
        std::fs::create_dir_all(tree.join(dir)).expect("mkdir");
    }
    std::fs::write(tree.join("top.txt"), "top\n").expect("write");
    std::fs::write(tree.join("a/run.sh"), "#!/bin/sh\necho hi\n").expect("write");
    std::fs::write(tree.join("a/b/deep name.txt"), "deep").expect("write");
    std::fs::write(tree.join("ro/file"), "inside").expect("write");
    std::fs::set_permissions(
        tree.join("a/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::set_permissions(tree.join("ro"), std::fs::Permissions::from_mode(0o555))
        .expect("chmod");
    let remote_tree = remote("nested/tree");
    session
        .upload(&tree, &remote_tree)
        .await
        .expect("upload tree");
    assert_same_tree(&tree, Path::new(&remote_tree));

    assert!(session.is_dir(&remote_tree).await.expect("is_dir"));
    assert!(!session.is_dir(&remote("big.bin")).await.expect("is_dir"));
    assert!(!session.is_dir(&remote("missing")).await.expect("is_dir"));

    let tree_back = local.path().join("tree.back");
    session
        .download(&remote_tree, &tree_back)
        .await
        .expect("download tree");
    assert_same_tree(&tree, &tree_back);

    // A missing remote file is an error that names it.
    let err = session
        .download(&remote("missing"), &local.path().join("x"))
        .await
        .expect_err("missing file");
    assert!(matches!(err, SshError::Transfer { .. }), "{err:?}");
    assert!(!local.path().join("x").exists());

    hostile_download(session, &remote("hostile"), local.path()).await;

    // Leave nothing read-only behind for the temp dir cleanup.
    for root in [Path::new(&remote_tree), tree.as_path(), tree_back.as_path()] {
        std::fs::set_permissions(root.join("ro"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
}

/// A tree a hostile guest could make: setuid, setgid and sticky modes,
/// links to a directory and to a file outside it. The copy keeps inside
/// its destination and drops the special bits.
async fn hostile_download(session: &Session, remote: &str, local: &Path) {
    let root = Path::new(remote);
    std::fs::create_dir_all(root.join("sgid")).expect("mkdir");
    std::fs::create_dir_all(root.join("sticky")).expect("mkdir");
    std::fs::write(root.join("suid"), "#!/bin/sh\n").expect("write");
    std::fs::write(root.join("sgid/file"), "x").expect("write");
    let outside = local.join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(outside.join("target.txt"), "outside\n").expect("write");
    std::os::unix::fs::symlink(&outside, root.join("dir-link")).expect("symlink");
    std::os::unix::fs::symlink(outside.join("target.txt"), root.join("file-link"))
        .expect("symlink");
    for (path, mode) in [("suid", 0o4755), ("sgid", 0o2755), ("sticky", 0o1777)] {
        std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
    }
    let back = local.join("hostile.back");
    session.download(remote, &back).await.expect("download");
    assert_eq!(mode_of(&back.join("suid")), 0o755);
    assert_eq!(mode_of(&back.join("sgid")), 0o755);
    assert_eq!(mode_of(&back.join("sticky")), 0o777);
    // The link to a directory is left out; the one to a file is a copy.
    assert!(std::fs::symlink_metadata(back.join("dir-link")).is_err());
    let copy = std::fs::symlink_metadata(back.join("file-link")).expect("copied");
    assert!(copy.file_type().is_file(), "{copy:?}");
    assert_eq!(
        std::fs::read_to_string(back.join("file-link")).expect("read"),
        "outside\n"
    );
    // A single file: no setuid either.
    let single = local.join("suid.single");
    session
        .download(&format!("{remote}/suid"), &single)
        .await
        .expect("download one");
    assert_eq!(mode_of(&single), 0o755);

    // A link already in the destination is not written through.
    let again = local.join("hostile.again");
    std::fs::create_dir(&again).expect("mkdir");
    std::os::unix::fs::symlink(&outside, again.join("sgid")).expect("symlink");
    let err = session.download(remote, &again).await.expect_err("refused");
    assert!(err.to_string().contains("sgid"), "{err}");
    assert!(!outside.join("file").exists(), "wrote through the link");
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

fn assert_same_tree(expected: &Path, actual: &Path) {
    assert_eq!(
        mode_of(expected),
        mode_of(actual),
        "mode of {}",
        actual.display()
    );
    let mut names: Vec<_> = std::fs::read_dir(expected)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    let mut actual_names: Vec<_> = std::fs::read_dir(actual)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    actual_names.sort();
    assert_eq!(names, actual_names, "entries of {}", actual.display());
    for name in names {
        let (e, a) = (expected.join(&name), actual.join(&name));
        if e.is_dir() {
            assert_same_tree(&e, &a);
        } else {
            assert_eq!(
                std::fs::read(&e).expect("read"),
                std::fs::read(&a).expect("read")
            );
            assert_eq!(mode_of(&e), mode_of(&a), "mode of {}", a.display());
        }
    }
}

#[test]
fn debug_of_the_ssh_settings_hides_the_password() {
    let config = SshConfig {
        host: "127.0.0.1".into(),
        port: 2222,
        username: "builder".into(),
        auth: Auth::Password("ssh-pa\"ss".into()),
        timeout: Duration::from_secs(1),
        handshake_attempts: 1,
        pty: false,
    };
    for shown in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{:?}", config.auth),
    ] {
        assert!(!shown.contains("ssh-pa"), "{shown}");
        assert!(shown.contains("Password(<sensitive>)"), "{shown}");
    }
    assert!(format!("{config:?}").contains("builder"));
}

/// cloud-init's answer to a root login on an image with `disable_root`
/// (without its `sleep 10`): the upload error carries what the guest said,
/// not just its exit code.
#[tokio::test]
async fn a_refused_login_says_what_the_guest_said() {
    for sftp in [true, false] {
        let server = start(sftp);
        let authorized = server.dir.path().join("authorized_keys");
        let key = std::fs::read_to_string(&authorized).expect("read");
        std::fs::write(
            &authorized,
            format!(
                "no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command=\"echo 'Please login as the user \\\"ubuntu\\\" rather than the user \\\"root\\\".';echo;exit 142\" {key}"
            ),
        )
        .expect("write");
        let session = session(&server).await;
        let err = session
            .upload_bytes(b"data", "/tmp/never-written", 0o644)
            .await
            .expect_err("the forced command refuses the upload");
        let text = crate::error::error_chain(&err);
        assert!(
            text.contains(
                "exit code 142: Please login as the user \"ubuntu\" rather than the user \"root\"."
            ),
            "sftp {sftp}: {text}"
        );
        let local = server.dir.path().join("never-read");
        let err = session
            .download("/etc/hostname", &local)
            .await
            .expect_err("the forced command refuses the download");
        let text = crate::error::error_chain(&err);
        assert!(
            text.contains("exit code 142: Please login as the user \"ubuntu\""),
            "sftp {sftp}: {text}"
        );
        session.close().await;
    }
}
