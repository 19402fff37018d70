//! kiln's own QMP transport: a reader task splits QEMU's messages into
//! command responses (matched by `id`) and events. Events are kept as JSON:
//! an event kiln does not know is never a reason to drop the connection.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, oneshot};

use super::QemuError;

/// A command QEMU does not answer in this time is treated as a broken
/// connection rather than waited on forever.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Events kept for late readers (see [`Qmp::recent_events`]).
const KEPT_EVENTS: usize = 64;

type Reply = Result<Value, QemuError>;
type Pending = Arc<Mutex<PendingState>>;

#[derive(Default)]
struct PendingState {
    waiting: HashMap<u64, oneshot::Sender<Reply>>,
    /// Set once the connection is gone: later commands fail at once.
    closed: Option<String>,
}

/// The top image of one of the guest's disks, as QEMU has it open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopImage {
    /// Its node name, for block commands.
    pub node: String,
    /// Its format driver (`qcow2`, `raw`).
    pub format: String,
    /// The disk's size as the guest sees it, in bytes.
    pub virtual_size: u64,
}

/// A QMP connection over a unix socket (kiln's own small transport: events are
/// kept as JSON, never a reason to drop the connection).
pub struct Qmp {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
    events: broadcast::Sender<Value>,
    recent: Arc<Mutex<VecDeque<Value>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Qmp {
    /// Connects to QEMU's QMP socket, retrying until it appears or `timeout`
    /// passes, and negotiates capabilities.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QemuError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(stream) => break stream,
                Err(err) if tokio::time::Instant::now() >= deadline => {
                    return Err(QemuError::QmpConnect {
                        path: path.to_path_buf(),
                        reason: format!("{err} (gave up after {}s)", timeout.as_secs()),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let (read, write) = stream.into_split();
        let mut read = BufReader::new(read);
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let greeting = tokio::time::timeout(
            remaining.max(Duration::from_secs(1)),
            read_message(&mut read),
        )
        .await
        .map_err(|_| QemuError::QmpConnect {
            path: path.to_path_buf(),
            reason: "QEMU sent no greeting".to_string(),
        })?
        .map_err(|err| QemuError::QmpConnect {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
        if greeting.get("QMP").is_none() {
            return Err(QemuError::QmpConnect {
                path: path.to_path_buf(),
                reason: format!("unexpected greeting {greeting}"),
            });
        }

        let pending: Pending = Arc::default();
        let (events, _) = broadcast::channel(256);
        let recent = Arc::new(Mutex::new(VecDeque::new()));
        let reader = tokio::spawn(read_loop(
            read,
            pending.clone(),
            events.clone(),
            recent.clone(),
        ));
        let qmp = Qmp {
            writer: tokio::sync::Mutex::new(write),
            pending,
            next_id: AtomicU64::new(1),
            events,
            recent,
            reader,
        };
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs a QMP command and returns its `return` value; QEMU's error
    /// (`class` and `desc`) becomes [`QemuError::Qmp`].
    async fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, QemuError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        {
            let mut pending = self
                .pending
                .lock()
                .map_err(|_| QemuError::QmpProtocol("QMP state poisoned".to_string()))?;
            if let Some(why) = &pending.closed {
                return Err(QemuError::QmpProtocol(why.clone()));
            }
            pending.waiting.insert(id, sender);
        }
        let mut message = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        let mut line = message.to_string();
        line.push('\n');
        let sent = {
            let mut writer = self.writer.lock().await;
            writer.write_all(line.as_bytes()).await
        };
        if let Err(err) = sent {
            self.forget(id);
            return Err(QemuError::QmpProtocol(format!("sending {command}: {err}")));
        }
        match tokio::time::timeout(COMMAND_TIMEOUT, receiver).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(QemuError::Qmp { class, desc, .. }))) => Err(QemuError::Qmp {
                command: command.to_string(),
                class,
                desc,
            }),
            Ok(Ok(Err(err))) => Err(err),
            Ok(Err(_)) => Err(QemuError::QmpProtocol(format!(
                "connection closed before {command} was answered"
            ))),
            Err(_) => {
                self.forget(id);
                Err(QemuError::QmpProtocol(format!(
                    "no answer to {command} in {}s",
                    COMMAND_TIMEOUT.as_secs()
                )))
            }
        }
    }

    fn forget(&self, id: u64) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.waiting.remove(&id);
        }
    }

    /// Presses the ACPI power button.
    pub async fn system_powerdown(&self) -> Result<(), QemuError> {
        self.execute("system_powerdown", None).await.map(drop)
    }

    /// Presses (`down`) or releases one key of the guest's keyboard;
    /// `qcode` is QEMU's name for it (`ret`, `shift`, `a`, ...).
    pub async fn send_key(&self, qcode: &str, down: bool) -> Result<(), QemuError> {
        let event = json!({
            "type": "key",
            "data": { "down": down, "key": { "type": "qcode", "data": qcode } },
        });
        self.execute("input-send-event", Some(json!({ "events": [event] })))
            .await
            .map(drop)
    }

    /// Sets the VNC server's password (`vnc_use_password`).
    pub async fn set_vnc_password(&self, password: &str) -> Result<(), QemuError> {
        self.execute("change-vnc-password", Some(json!({ "password": password })))
            .await
            .map(drop)
    }

    /// Pauses the guest's vCPUs; QEMU drains and flushes the disks' I/O
    /// before it answers.
    pub async fn stop(&self) -> Result<(), QemuError> {
        self.execute("stop", None).await.map(drop)
    }

    /// Resumes the guest's vCPUs (after `stop`, a migration, or an
    /// incoming migration that left the guest paused).
    pub async fn cont(&self) -> Result<(), QemuError> {
        self.execute("cont", None).await.map(drop)
    }

    /// The image at the top of the disk whose top image file is `path`
    /// (QEMU names the nodes of `-drive` disks itself).
    pub async fn top_image(&self, path: &Path) -> Result<TopImage, QemuError> {
        let blocks = self.execute("query-block", None).await?;
        top_image_in(&blocks, path).ok_or_else(|| {
            QemuError::other(format!(
                "QEMU has no disk whose top image is {}",
                path.display()
            ))
        })
    }

    /// Opens `path`, a qcow2 image, as node `node_name` with the disk
    /// options of `disk` (cache, discard, detect-zeroes: what `-drive` set
    /// on the image it goes on), without opening its backing file:
    /// [`Qmp::snapshot`] gives it the running disk as backing instead.
    pub async fn add_overlay(
        &self,
        node_name: &str,
        path: &Path,
        disk: &super::Disk,
    ) -> Result<(), QemuError> {
        let filename = path_str(path)?;
        self.execute(
            "blockdev-add",
            Some(overlay_options(node_name, filename, disk)),
        )
        .await
        .map(drop)
    }

    /// Puts `overlay` on top of `node`: the guest writes to the overlay
    /// from now on and `node` is its backing, no longer written to. QEMU
    /// leaves the backing file name recorded in the overlay's header as it
    /// was written.
    pub async fn snapshot(&self, node: &str, overlay: &str) -> Result<(), QemuError> {
        self.execute(
            "blockdev-snapshot",
            Some(json!({ "node": node, "overlay": overlay })),
        )
        .await
        .map(drop)
    }

    /// Saves the machine's memory and device state to `path` (a new file)
    /// and waits until QEMU says the migration is over. Best with the
    /// guest stopped: the file then matches the disks exactly.
    pub async fn migrate_to_file(&self, path: &Path, timeout: Duration) -> Result<(), QemuError> {
        self.execute(
            "migrate",
            Some(json!({ "channels": [file_channel(path)?] })),
        )
        .await?;
        self.wait_migration(timeout).await
    }

    /// Loads the machine's state from `path`, a file written by
    /// [`Qmp::migrate_to_file`], into a QEMU started with `-incoming defer`,
    /// and waits until it is loaded. QEMU exits when the stream is bad.
    pub async fn migrate_from_file(&self, path: &Path, timeout: Duration) -> Result<(), QemuError> {
        self.execute(
            "migrate-incoming",
            Some(json!({ "channels": [file_channel(path)?] })),
        )
        .await?;
        self.wait_migration(timeout).await
    }

    /// Polls `query-migrate` until the migration completed or failed.
    async fn wait_migration(&self, timeout: Duration) -> Result<(), QemuError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let info = self.execute("query-migrate", None).await?;
            match migration_outcome(&info) {
                Some(Ok(())) => return Ok(()),
                Some(Err(why)) => return Err(QemuError::other(format!("migration failed: {why}"))),
                None if tokio::time::Instant::now() >= deadline => {
                    return Err(QemuError::other(format!(
                        "migration not over after {}s (status {})",
                        timeout.as_secs(),
                        info.get("status").and_then(Value::as_str).unwrap_or("none")
                    )));
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// The run state (`running`, `internal-error`, `shutdown`, ...).
    pub(crate) async fn run_state(&self) -> Result<String, QemuError> {
        let status = self.execute("query-status", None).await?;
        status
            .get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| QemuError::QmpProtocol(format!("query-status returned {status}")))
    }

    /// A human monitor command (for what QMP has no command for, such as
    /// the registers of a vCPU).
    pub(crate) async fn human_command(&self, command_line: &str) -> Result<String, QemuError> {
        let value = self
            .execute(
                "human-monitor-command",
                Some(json!({ "command-line": command_line })),
            )
            .await?;
        Ok(value.as_str().unwrap_or_default().to_string())
    }

    /// Events from now on (whole QMP event objects: `event`, `data`,
    /// `timestamp`).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.events.subscribe()
    }

    /// The last events received, oldest first, including those that came
    /// before anyone subscribed.
    pub(crate) fn recent_events(&self) -> Vec<Value> {
        self.recent
            .lock()
            .map(|recent| recent.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the connection is still up.
    #[cfg(test)]
    fn is_connected(&self) -> bool {
        self.pending
            .lock()
            .map(|pending| pending.closed.is_none())
            .unwrap_or(false)
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// `blockdev-add`'s arguments for a qcow2 overlay with `-drive`'s
/// cache, discard and detect-zeroes options of `disk`.
fn overlay_options(node_name: &str, filename: &str, disk: &super::Disk) -> Value {
    let cache = json!({
        "direct": matches!(disk.cache.as_str(), "none" | "directsync"),
        "no-flush": disk.cache == "unsafe",
    });
    let discard = if disk.discard == "unmap" || disk.discard == "on" {
        "unmap"
    } else {
        "ignore"
    };
    let mut options = json!({
        "driver": "qcow2",
        "node-name": node_name,
        "cache": cache,
        "discard": discard,
        "file": { "driver": "file", "filename": filename, "cache": cache, "discard": discard },
        "backing": null,
    });
    if matches!(disk.detect_zeroes.as_str(), "on" | "unmap") {
        options["detect-zeroes"] = json!(disk.detect_zeroes);
    }
    options
}

/// A migration channel to or from a whole file (no URI: a path may hold
/// any character).
fn file_channel(path: &Path) -> Result<Value, QemuError> {
    Ok(json!({
        "channel-type": "main",
        "addr": { "transport": "file", "filename": path_str(path)?, "offset": 0 },
    }))
}

fn path_str(path: &Path) -> Result<&str, QemuError> {
    path.to_str()
        .ok_or_else(|| QemuError::other(format!("{} is not UTF-8", path.display())))
}

/// `query-block`'s top image of the disk whose top image file is `path`.
fn top_image_in(blocks: &Value, path: &Path) -> Option<TopImage> {
    let wanted = path.to_str()?;
    let inserted = blocks.as_array()?.iter().find_map(|block| {
        let inserted = block.get("inserted")?;
        (inserted.get("file")?.as_str()? == wanted).then_some(inserted)
    })?;
    Some(TopImage {
        node: inserted.get("node-name")?.as_str()?.to_string(),
        format: inserted.get("drv")?.as_str()?.to_string(),
        virtual_size: inserted.get("image")?.get("virtual-size")?.as_u64()?,
    })
}

/// `None` while `query-migrate` says the migration is under way (or has
/// not started), else how it ended, with QEMU's reason for a failure.
fn migration_outcome(info: &Value) -> Option<Result<(), String>> {
    match info.get("status").and_then(Value::as_str)? {
        "completed" => Some(Ok(())),
        "failed" | "cancelled" => Some(Err(info
            .get("error-desc")
            .and_then(Value::as_str)
            .unwrap_or("QEMU gave no reason")
            .to_string())),
        _ => None,
    }
}

async fn read_message(read: &mut BufReader<OwnedReadHalf>) -> Result<Value, QemuError> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = read
            .read_line(&mut line)
            .await
            .map_err(|err| QemuError::QmpProtocol(format!("reading: {err}")))?;
        if n == 0 {
            return Err(QemuError::QmpProtocol(
                "QEMU closed the connection".to_string(),
            ));
        }
        if line.trim().is_empty() {
            continue;
        }
        return serde_json::from_str(&line).map_err(|err| {
            QemuError::QmpProtocol(format!("bad JSON from QEMU ({err}): {}", line.trim()))
        });
    }
}

async fn read_loop(
    mut read: BufReader<OwnedReadHalf>,
    pending: Pending,
    events: broadcast::Sender<Value>,
    recent: Arc<Mutex<VecDeque<Value>>>,
) {
    let why = loop {
        let message = match read_message(&mut read).await {
            Ok(message) => message,
            Err(err) => break err.to_string(),
        };
        match classify(message) {
            Message::Event(event) => {
                tracing::debug!(?event, "QMP event");
                if let Ok(mut recent) = recent.lock() {
                    if recent.len() == KEPT_EVENTS {
                        recent.pop_front();
                    }
                    recent.push_back(event.clone());
                }
                // No subscriber is fine.
                let _ = events.send(event);
            }
            Message::Reply(id, reply) => {
                let sender = pending
                    .lock()
                    .ok()
                    .and_then(|mut pending| pending.waiting.remove(&id));
                if let Some(sender) = sender {
                    let _ = sender.send(reply);
                }
            }
            Message::Other(value) => {
                tracing::debug!(%value, "unexpected QMP message ignored");
            }
        }
    };
    if let Ok(mut pending) = pending.lock() {
        pending.closed = Some(why.clone());
        for (_, sender) in pending.waiting.drain() {
            let _ = sender.send(Err(QemuError::QmpProtocol(why.clone())));
        }
    }
}

enum Message {
    Event(Value),
    Reply(u64, Reply),
    Other(Value),
}

fn classify(message: Value) -> Message {
    if message.get("event").is_some() {
        return Message::Event(message);
    }
    let Some(id) = message.get("id").and_then(Value::as_u64) else {
        return Message::Other(message);
    };
    if let Some(value) = message.get("return") {
        return Message::Reply(id, Ok(value.clone()));
    }
    if let Some(error) = message.get("error") {
        let text = |key: &str| {
            error
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        return Message::Reply(
            id,
            Err(QemuError::Qmp {
                command: String::new(),
                class: text("class"),
                desc: text("desc"),
            }),
        );
    }
    Message::Other(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A fake QEMU that greets, answers every command with `answer`, and
    /// sends an unknown event before each answer.
    async fn fake_qemu(listener: UnixListener, answer: fn(&Value) -> Value) -> Vec<Value> {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        write
            .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
            .await
            .unwrap();
        let mut lines = BufReader::new(read).lines();
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let command: Value = serde_json::from_str(&line).unwrap();
            let event = json!({"event": "SOMETHING_NEW", "data": {"x": 1}, "timestamp": {"seconds": 1, "microseconds": 2}});
            write
                .write_all(format!("{event}\r\n").as_bytes())
                .await
                .unwrap();
            let mut reply = answer(&command);
            reply["id"] = command["id"].clone();
            write
                .write_all(format!("{reply}\r\n").as_bytes())
                .await
                .unwrap();
            seen.push(command);
        }
        seen
    }

    fn answers(command: &Value) -> Value {
        match command["execute"].as_str() {
            Some("query-status") => json!({"return": {"status": "running", "running": true}}),
            Some("bogus") => {
                json!({"error": {"class": "CommandNotFound", "desc": "The command bogus has not been found"}})
            }
            _ => json!({"return": {}}),
        }
    }

    #[test]
    fn finds_the_top_image_of_a_disk_by_its_file() {
        let blocks = json!([
            {"device": "ide1-cd0", "inserted": {"file": "/s/seed.iso", "node-name": "#block1", "drv": "raw", "image": {"virtual-size": 2048}}},
            {"device": "virtio0", "inserted": {"file": "/o/disk", "node-name": "#block3", "drv": "qcow2", "image": {"virtual-size": 1073741824_u64}}},
            {"device": "floppy0"},
        ]);
        assert_eq!(
            top_image_in(&blocks, Path::new("/o/disk")),
            Some(TopImage {
                node: "#block3".into(),
                format: "qcow2".into(),
                virtual_size: 1 << 30
            })
        );
        assert_eq!(top_image_in(&blocks, Path::new("/o/other")), None);
    }

    #[test]
    fn an_overlay_keeps_the_disks_options() {
        let disk = crate::qemu::Disk {
            path: "/o/disk".into(),
            format: "qcow2".into(),
            interface: "virtio".into(),
            cache: "unsafe".into(),
            discard: "unmap".into(),
            detect_zeroes: "unmap".into(),
            read_only: false,
        };
        let options = overlay_options("kiln-top-1", "/c/next.qcow2", &disk);
        assert_eq!(options["backing"], Value::Null);
        assert_eq!(options["discard"], "unmap");
        assert_eq!(options["detect-zeroes"], "unmap");
        assert_eq!(options["cache"]["no-flush"], true);
        assert_eq!(options["file"]["filename"], "/c/next.qcow2");
        let plain = crate::qemu::Disk {
            cache: "writeback".into(),
            discard: "ignore".into(),
            detect_zeroes: "off".into(),
            ..disk
        };
        let options = overlay_options("n", "/f", &plain);
        assert_eq!(options["discard"], "ignore");
        assert!(options.get("detect-zeroes").is_none());
        assert_eq!(options["cache"]["direct"], false);
    }

    #[test]
    fn migration_outcome_carries_qemus_reason() {
        assert_eq!(migration_outcome(&json!({})), None);
        assert_eq!(migration_outcome(&json!({"status": "active"})), None);
        assert_eq!(
            migration_outcome(&json!({"status": "completed"})),
            Some(Ok(()))
        );
        assert_eq!(
            migration_outcome(&json!({"status": "failed", "error-desc": "No space left"})),
            Some(Err("No space left".to_string()))
        );
    }

    #[tokio::test]
    async fn talks_qmp_and_survives_unknown_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let server_path = path.clone();
        // The socket appears only later: connect must retry.
        let server = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            fake_qemu(UnixListener::bind(server_path).unwrap(), answers).await
        });
        let qmp = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
        let mut events = qmp.subscribe();
        assert_eq!(qmp.run_state().await.unwrap(), "running");
        let err = qmp.execute("bogus", None).await.unwrap_err();
        assert!(
            matches!(&err, QemuError::Qmp { command, class, desc }
                if command == "bogus" && class == "CommandNotFound" && desc.contains("has not been found")),
            "{err:?}"
        );
        qmp.system_powerdown().await.unwrap();
        assert_eq!(events.recv().await.unwrap()["event"], "SOMETHING_NEW");
        assert!(qmp.recent_events().len() >= 3);
        assert!(qmp.is_connected());
        drop(qmp);
        let seen = server.await.unwrap();
        let names: Vec<&str> = seen.iter().filter_map(|c| c["execute"].as_str()).collect();
        assert_eq!(
            names,
            [
                "qmp_capabilities",
                "query-status",
                "bogus",
                "system_powerdown"
            ]
        );
        // Every command carried a distinct id.
        let mut ids: Vec<u64> = seen.iter().filter_map(|c| c["id"].as_u64()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 4);
    }

    #[tokio::test]
    async fn commands_fail_once_qemu_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            write.write_all(b"{\"QMP\": {}}\n").await.unwrap();
            let mut lines = BufReader::new(read).lines();
            let line = lines.next_line().await.unwrap().unwrap();
            let command: Value = serde_json::from_str(&line).unwrap();
            let reply = json!({"return": {}, "id": command["id"]});
            write
                .write_all(format!("{reply}\n").as_bytes())
                .await
                .unwrap();
            // Then QEMU exits.
        });
        let qmp = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
        server.await.unwrap();
        let err = qmp.run_state().await.unwrap_err();
        assert!(matches!(err, QemuError::QmpProtocol(_)), "{err:?}");
        assert!(!qmp.is_connected());
    }

    #[tokio::test]
    async fn connect_gives_up_when_no_socket_appears() {
        let dir = tempfile::tempdir().unwrap();
        let err = Qmp::connect(&dir.path().join("none.sock"), Duration::from_millis(300))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, QemuError::QmpConnect { .. }), "{err:?}");
    }
}
