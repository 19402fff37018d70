//! Moving files: SFTP when the guest has it, otherwise `cat` and friends
//! through exec channels (guests without `scp` or an SFTP server).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use russh::ChannelMsg;
use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, FileType, OpenFlags, StatusCode};
use tokio::io::{AsyncBufRead, AsyncWriteExt, BufReader, BufWriter};

use super::{ExitStatus, Session, SshError};

/// How long a server may take to say whether it has an SFTP subsystem.
const PROBE_LIMIT: Duration = Duration::from_secs(10);
/// Read size for local files: large enough to keep SFTP writes pipelined.
const CHUNK: usize = 256 * 1024;

/// How files move to and from this guest.
pub(super) enum Transport {
    /// The guest's SFTP subsystem.
    Sftp(SftpSession),
    /// No SFTP subsystem: shell commands through exec channels.
    Shell,
}

/// One entry of a local or remote tree, relative to its root.
struct Entry {
    /// `/`-separated; empty for the root itself.
    rel: String,
    dir: bool,
    mode: u32,
}

/// A tree walked breadth first, local or remote alike: parents come
/// before their children, siblings in name order. The caller lists each
/// directory [`Walk::next_dir`] gives and hands its children to
/// [`Walk::add`].
struct Walk {
    entries: Vec<Entry>,
    /// The first entry not yet looked at.
    next: usize,
}

impl Walk {
    /// A walk from the root directory, whose mode is `root_mode`.
    fn new(root_mode: u32) -> Walk {
        Walk {
            entries: vec![Entry {
                rel: String::new(),
                dir: true,
                mode: root_mode,
            }],
            next: 0,
        }
    }

    /// The next directory to list (relative to the root), if any is left.
    fn next_dir(&mut self) -> Option<String> {
        while let Some(entry) = self.entries.get(self.next) {
            self.next += 1;
            if entry.dir {
                return Some(entry.rel.clone());
            }
        }
        None
    }

    /// The children of the directory `next_dir` gave last.
    fn add(&mut self, mut children: Vec<Entry>) {
        children.sort_by(|a, b| a.rel.cmp(&b.rel));
        self.entries.extend(children);
    }

    fn into_entries(self) -> Vec<Entry> {
        self.entries
    }
}

impl Session {
    /// Writes `data` to the remote file `remote` (created or truncated).
    pub async fn upload_bytes(&self, data: &[u8], remote: &str, mode: u32) -> Result<(), SshError> {
        let mut data = data;
        self.put_file(&mut data, remote, mode).await
    }

    /// Uploads a local file or directory tree to `remote` (the exact target
    /// path; the caller applies Packer's trailing-slash rule). File modes
    /// are kept.
    pub async fn upload(&self, local: &Path, remote: &str) -> Result<(), SshError> {
        let meta = tokio::fs::metadata(local)
            .await
            .map_err(|err| SshError::local(local, err))?;
        if !meta.is_dir() {
            return self
                .upload_file(local, remote, meta.permissions().mode())
                .await;
        }
        let root = local.to_path_buf();
        let entries = tokio::task::spawn_blocking(move || local_tree(&root))
            .await
            .map_err(|err| SshError::transfer(remote, err))??;
        for entry in entries.iter().filter(|e| e.dir) {
            self.make_dir(&join(remote, &entry.rel)).await?;
        }
        for entry in entries.iter().filter(|e| !e.dir) {
            let path = local.join(&entry.rel);
            self.upload_file(&path, &join(remote, &entry.rel), entry.mode)
                .await?;
        }
        // Directory modes last, deepest first: a read-only directory would
        // refuse what goes into it.
        for entry in entries.iter().rev().filter(|e| e.dir) {
            self.set_mode(&join(remote, &entry.rel), entry.mode).await?;
        }
        Ok(())
    }

    /// Downloads a remote file or directory tree to `local` (the exact
    /// target path). File modes are kept, but for setuid, setgid and
    /// sticky bits. The guest names what is in the tree: a name that would
    /// leave `local` (`..`, absolute), or a way through a symbolic link
    /// already there, is refused before anything is written.
    pub async fn download(&self, remote: &str, local: &Path) -> Result<(), SshError> {
        if !self.is_dir(remote).await? {
            let mode = self.get_file(remote, local, true).await?;
            return set_local_mode(local, mode.unwrap_or(0o644));
        }
        let entries = self.remote_tree(remote).await?;
        let mut paths = Vec::with_capacity(entries.len());
        for entry in &entries {
            paths.push(
                local_path(local, &entry.rel).map_err(|err| SshError::transfer(remote, err))?,
            );
        }
        let dirs = || entries.iter().zip(&paths).filter(|(e, _)| e.dir);
        for (_, path) in dirs() {
            refuse_links(local, path)?;
            tokio::fs::create_dir_all(path)
                .await
                .map_err(|err| SshError::local(path, err))?;
        }
        for (entry, path) in entries.iter().zip(&paths).filter(|(e, _)| !e.dir) {
            refuse_links(local, path)?;
            self.get_file(&join(remote, &entry.rel), path, false)
                .await?;
            set_local_mode(path, entry.mode)?;
        }
        for (entry, path) in dirs().collect::<Vec<_>>().into_iter().rev() {
            set_local_mode(path, entry.mode)?;
        }
        Ok(())
    }

    /// Whether `remote` is a directory on the guest (false when missing).
    pub async fn is_dir(&self, remote: &str) -> Result<bool, SshError> {
        match self.transport().await? {
            Transport::Sftp(sftp) => match sftp.metadata(remote).await {
                Ok(meta) => Ok(meta.is_dir()),
                Err(err) if is_missing(&err) => Ok(false),
                Err(err) => Err(SshError::transfer(remote, err)),
            },
            Transport::Shell => {
                let command = format!("test -d {}", shell_quote(remote));
                let outcome = self
                    .exec_raw(&command, None, &mut tokio::io::sink())
                    .await?;
                match outcome.status {
                    ExitStatus::Code(0) => Ok(true),
                    ExitStatus::Code(1) => Ok(false),
                    // Anything else is an error that says what the guest said.
                    _ => outcome.check(remote).map(|()| false),
                }
            }
        }
    }

    /// Which way files move on this session, probed once: SFTP when the
    /// server runs the subsystem, else shell commands.
    async fn transport(&self) -> Result<&Transport, SshError> {
        self.transport
            .get_or_try_init(|| async {
                let transport = self.probe_sftp().await?;
                if matches!(transport, Transport::Shell) && self.handle.is_closed() {
                    // A dead connection, not a missing subsystem: do not
                    // remember the wrong answer.
                    return Err(SshError::Protocol("the connection is closed".into()));
                }
                Ok(transport)
            })
            .await
    }

    async fn probe_sftp(&self) -> Result<Transport, SshError> {
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(SshError::protocol)?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(SshError::protocol)?;
        let answer = async {
            loop {
                match channel.wait().await {
                    Some(ChannelMsg::Success) => return true,
                    Some(ChannelMsg::Failure | ChannelMsg::Close | ChannelMsg::Eof) | None => {
                        return false;
                    }
                    Some(_) => {}
                }
            }
        };
        let has_sftp = tokio::time::timeout(PROBE_LIMIT, answer)
            .await
            .unwrap_or(false);
        if !has_sftp {
            let _ = channel.close().await;
            return Ok(Transport::Shell);
        }
        match SftpSession::new(channel.into_stream()).await {
            Ok(sftp) => Ok(Transport::Sftp(sftp)),
            Err(err) => {
                tracing::debug!("sftp subsystem unusable, using shell commands: {err}");
                Ok(Transport::Shell)
            }
        }
    }

    async fn upload_file(&self, local: &Path, remote: &str, mode: u32) -> Result<(), SshError> {
        let file = tokio::fs::File::open(local)
            .await
            .map_err(|err| SshError::local(local, err))?;
        let mut reader = BufReader::with_capacity(CHUNK, file);
        self.put_file(&mut reader, remote, mode).await
    }

    /// Streams `data` into the remote file and gives it `mode`, whatever
    /// the remote umask or an earlier mode of the file.
    async fn put_file(
        &self,
        data: &mut (dyn AsyncBufRead + Unpin + Send),
        remote: &str,
        mode: u32,
    ) -> Result<(), SshError> {
        let mode = mode & 0o7777;
        match self.transport().await? {
            Transport::Sftp(sftp) => {
                let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
                let mut file = sftp
                    .open_with_flags_and_attributes(remote, flags, mode_attrs(mode))
                    .await
                    .map_err(|err| SshError::transfer(remote, err))?;
                // Whole buffers at a time, so SFTP writes go out large and
                // pipelined rather than 8 KiB each.
                tokio::io::copy_buf(data, &mut file)
                    .await
                    .map_err(|err| SshError::transfer(remote, err))?;
                file.shutdown()
                    .await
                    .map_err(|err| SshError::transfer(remote, err))?;
                self.set_mode(remote, mode).await
            }
            Transport::Shell => {
                let path = shell_quote(remote);
                // umask first: the file is never readable by others while
                // it is being written, even when it ends up 0600.
                let command = format!("umask 077 && cat > {path} && chmod {mode:o} {path}");
                self.exec_raw(&command, Some(data), &mut tokio::io::sink())
                    .await?
                    .check(remote)
            }
        }
    }

    /// Copies the remote file to `local`; gives back its mode when asked
    /// (over the shell that costs one more command).
    async fn get_file(
        &self,
        remote: &str,
        local: &Path,
        want_mode: bool,
    ) -> Result<Option<u32>, SshError> {
        let result = self.get_file_inner(remote, local, want_mode).await;
        if result.is_err() {
            // No truncated copy that looks like the real thing.
            let _ = tokio::fs::remove_file(local).await;
        }
        result
    }

    async fn get_file_inner(
        &self,
        remote: &str,
        local: &Path,
        want_mode: bool,
    ) -> Result<Option<u32>, SshError> {
        let out = tokio::fs::File::create(local)
            .await
            .map_err(|err| SshError::local(local, err))?;
        let mut out = BufWriter::with_capacity(CHUNK, out);
        let mode = match self.transport().await? {
            Transport::Sftp(sftp) => {
                let mut file = sftp
                    .open(remote)
                    .await
                    .map_err(|err| SshError::transfer(remote, err))?;
                let meta = file
                    .metadata()
                    .await
                    .map_err(|err| SshError::transfer(remote, err))?;
                tokio::io::copy(&mut file, &mut out)
                    .await
                    .map_err(|err| SshError::transfer(remote, err))?;
                let _ = file.shutdown().await;
                meta.permissions
            }
            Transport::Shell => {
                let path = shell_quote(remote);
                self.exec_raw(&format!("cat {path}"), None, &mut out)
                    .await?
                    .check(remote)?;
                if want_mode {
                    let mut text = Vec::new();
                    self.exec_raw(&format!("stat -c %a {path}"), None, &mut text)
                        .await?
                        .check(remote)?;
                    parse_mode(String::from_utf8_lossy(&text).trim())
                } else {
                    None
                }
            }
        };
        out.flush()
            .await
            .map_err(|err| SshError::local(local, err))?;
        Ok(mode.map(|mode| mode & 0o7777))
    }

    /// Creates the directory and any missing parents (`mkdir -p`).
    async fn make_dir(&self, remote: &str) -> Result<(), SshError> {
        match self.transport().await? {
            Transport::Sftp(sftp) => {
                let mut path = String::new();
                for part in remote.split('/') {
                    if part.is_empty() {
                        if path.is_empty() {
                            path.push('/');
                        }
                        continue;
                    }
                    if !path.is_empty() && !path.ends_with('/') {
                        path.push('/');
                    }
                    path.push_str(part);
                    match sftp.metadata(path.as_str()).await {
                        Ok(meta) if meta.is_dir() => continue,
                        Ok(_) => {
                            return Err(SshError::transfer(
                                remote,
                                format!("{path} is not a directory"),
                            ));
                        }
                        Err(err) if is_missing(&err) => {}
                        Err(err) => return Err(SshError::transfer(remote, err)),
                    }
                    sftp.create_dir(path.as_str())
                        .await
                        .map_err(|err| SshError::transfer(remote, err))?;
                }
                Ok(())
            }
            Transport::Shell => {
                let command = format!("mkdir -p {}", shell_quote(remote));
                self.exec_raw(&command, None, &mut tokio::io::sink())
                    .await?
                    .check(remote)
            }
        }
    }

    async fn set_mode(&self, remote: &str, mode: u32) -> Result<(), SshError> {
        let mode = mode & 0o7777;
        match self.transport().await? {
            Transport::Sftp(sftp) => sftp
                .set_metadata(remote, mode_attrs(mode))
                .await
                .map_err(|err| SshError::transfer(remote, err)),
            Transport::Shell => {
                let command = format!("chmod {mode:o} {}", shell_quote(remote));
                self.exec_raw(&command, None, &mut tokio::io::sink())
                    .await?
                    .check(remote)
            }
        }
    }

    /// Every directory and regular file under `remote`, parents first,
    /// the root included. Symbolic links are followed to files; links to
    /// directories are left out (they could loop).
    async fn remote_tree(&self, remote: &str) -> Result<Vec<Entry>, SshError> {
        match self.transport().await? {
            Transport::Sftp(sftp) => {
                let root = sftp
                    .metadata(remote)
                    .await
                    .map_err(|err| SshError::transfer(remote, err))?;
                let mut walk = Walk::new(root.permissions.unwrap_or(0o755));
                while let Some(rel) = walk.next_dir() {
                    let dir = join(remote, &rel);
                    let listing = sftp
                        .read_dir(dir.as_str())
                        .await
                        .map_err(|err| SshError::transfer(&dir, err))?;
                    let mut children = Vec::new();
                    for item in listing {
                        let child = join(&rel, &item.file_name());
                        let mut meta = item.metadata();
                        if item.file_type() == FileType::Symlink {
                            match sftp.metadata(join(remote, &child)).await {
                                Ok(target) if target.is_regular() => meta = target,
                                _ => continue,
                            }
                        }
                        let dir = match meta.file_type() {
                            FileType::Dir => true,
                            FileType::File => false,
                            _ => continue,
                        };
                        children.push(Entry {
                            rel: child,
                            dir,
                            mode: meta.permissions.unwrap_or(0o644),
                        });
                    }
                    walk.add(children);
                }
                Ok(walk.into_entries())
            }
            Transport::Shell => {
                // One line per entry: type, octal mode, path from `.`.
                // Names with newlines are not supported on this path.
                let command = format!(
                    "cd {} && find . -type d -exec stat -c 'd %a %n' {{}} + && \
                     find . -type f -exec stat -c 'f %a %n' {{}} + && \
                     find . -type l -exec stat -L -c '%F|%a %n' {{}} + 2>/dev/null | \
                     sed -n 's/^regular[^|]*|/f /p'",
                    shell_quote(remote)
                );
                let mut listing = Vec::new();
                self.exec_raw(&command, None, &mut listing)
                    .await?
                    .check(remote)?;
                let mut entries: Vec<Entry> = String::from_utf8_lossy(&listing)
                    .lines()
                    .filter_map(parse_listing)
                    .collect();
                // Parents before children, whatever order find chose.
                entries.sort_by_key(|e| (depth(&e.rel), e.rel.clone()));
                Ok(entries)
            }
        }
    }
}

/// `d 755 ./a/b` into an entry.
fn parse_listing(line: &str) -> Option<Entry> {
    let (kind, rest) = line.split_once(' ')?;
    let (mode, name) = rest.split_once(' ')?;
    let rel = if name == "." {
        String::new()
    } else {
        name.strip_prefix("./")?.to_string()
    };
    Some(Entry {
        rel,
        dir: kind == "d",
        mode: parse_mode(mode)?,
    })
}

fn parse_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 8).ok()
}

/// The local tree under `root`, parents first (root excluded from files,
/// included as the empty directory). Links are followed to files; links
/// to directories are left out.
fn local_tree(root: &Path) -> Result<Vec<Entry>, SshError> {
    let root_meta = std::fs::metadata(root).map_err(|err| SshError::local(root, err))?;
    let mut walk = Walk::new(root_meta.permissions().mode());
    while let Some(rel) = walk.next_dir() {
        let dir: PathBuf = root.join(&rel);
        let listing = std::fs::read_dir(&dir).map_err(|err| SshError::local(&dir, err))?;
        let mut children = Vec::new();
        for item in listing {
            let item = item.map_err(|err| SshError::local(&dir, err))?;
            let path = item.path();
            let Some(name) = item.file_name().to_str().map(str::to_string) else {
                return Err(SshError::local(
                    &path,
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "the name is not UTF-8"),
                ));
            };
            let link = item
                .file_type()
                .map_err(|err| SshError::local(&path, err))?
                .is_symlink();
            let meta = std::fs::metadata(&path).map_err(|err| SshError::local(&path, err))?;
            if (link && !meta.is_file()) || !(meta.is_dir() || meta.is_file()) {
                continue;
            }
            children.push(Entry {
                rel: join(&rel, &name),
                dir: meta.is_dir(),
                mode: meta.permissions().mode(),
            });
        }
        walk.add(children);
    }
    Ok(walk.into_entries())
}

/// A downloaded file's mode: the guest's permission bits, never its
/// setuid, setgid or sticky bit (a guest must not hand the host a setuid
/// binary).
fn local_mode(mode: u32) -> u32 {
    mode & 0o777
}

fn set_local_mode(path: &Path, mode: u32) -> Result<(), SshError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(local_mode(mode)))
        .map_err(|err| SshError::local(path, err))
}

/// Where a guest-listed entry (`rel`, `/`-separated, empty for the root)
/// goes under `root`: only plain names are taken, so the result is always
/// inside `root`. A hostile SFTP server or shell can list anything.
fn local_path(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let mut path = root.to_path_buf();
    if rel.is_empty() {
        return Ok(path);
    }
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return Err(format!(
                "the guest listed {rel:?}, which would leave the destination"
            ));
        }
        path.push(part);
    }
    Ok(path)
}

/// No symbolic link between `root` and `path` (both included), so writing
/// `path` cannot land elsewhere. kiln never makes links here itself; this
/// guards against one left by an earlier run or another program.
fn refuse_links(root: &Path, path: &Path) -> Result<(), SshError> {
    let Ok(rel) = path.strip_prefix(root) else {
        return Err(SshError::local(
            path,
            std::io::Error::other("outside the download's destination"),
        ));
    };
    // The destination itself may well be a link the user made.
    let mut at = root.to_path_buf();
    let check = |at: &Path| match std::fs::symlink_metadata(at) {
        Ok(meta) if meta.file_type().is_symlink() => Err(SshError::local(
            at,
            std::io::Error::other("a symbolic link: refusing to download through it"),
        )),
        _ => Ok(()),
    };
    for part in rel.components() {
        at.push(part);
        check(&at)?;
    }
    Ok(())
}

fn mode_attrs(mode: u32) -> FileAttributes {
    FileAttributes {
        permissions: Some(mode),
        ..FileAttributes::empty()
    }
}

fn is_missing(err: &SftpError) -> bool {
    matches!(err, SftpError::Status(status) if status.status_code == StatusCode::NoSuchFile)
}

fn depth(rel: &str) -> usize {
    if rel.is_empty() {
        0
    } else {
        1 + rel.matches('/').count()
    }
}

/// `base/rel`, or `base` alone for the root.
fn join(base: &str, rel: &str) -> String {
    match (base, rel) {
        (base, "") => base.to_string(),
        ("", rel) => rel.to_string(),
        (base, rel) => format!("{}/{rel}", base.trim_end_matches('/')),
    }
}

/// Single quotes for a POSIX shell: nothing inside is special but the
/// quote itself, written as `'\''`.
pub(super) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_lists_parents_before_children_in_name_order() {
        let entry = |rel: &str, dir| Entry {
            rel: rel.to_string(),
            dir,
            mode: 0o644,
        };
        let mut walk = Walk::new(0o755);
        let mut listed = Vec::new();
        while let Some(rel) = walk.next_dir() {
            let children = match rel.as_str() {
                "" => vec![entry("b", true), entry("a", false), entry("c", true)],
                "b" => vec![entry("b/y", false), entry("b/x", true)],
                _ => vec![],
            };
            listed.push(rel);
            walk.add(children);
        }
        assert_eq!(listed, ["", "b", "c", "b/x"]);
        let order: Vec<String> = walk.into_entries().into_iter().map(|e| e.rel).collect();
        assert_eq!(order, ["", "a", "b", "c", "b/x", "b/y"]);
    }

    #[test]
    fn guest_names_that_would_leave_the_destination_are_refused() {
        let root = Path::new("/home/me/out");
        for rel in [
            "..",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/.",
            "a\0b",
        ] {
            assert!(local_path(root, rel).is_err(), "{rel:?} accepted");
        }
        assert_eq!(local_path(root, "").unwrap(), root);
        assert_eq!(
            local_path(root, "a/b..c/..d").unwrap(),
            root.join("a/b..c/..d")
        );
        // A backslash is an ordinary character in a Unix name.
        assert_eq!(local_path(root, "a\\b").unwrap(), root.join("a\\b"));
    }

    #[test]
    fn setuid_setgid_and_sticky_bits_are_dropped() {
        assert_eq!(local_mode(0o4755), 0o755);
        assert_eq!(local_mode(0o2711), 0o711);
        assert_eq!(local_mode(0o1777), 0o777);
        assert_eq!(local_mode(0o7644), 0o644);
        assert_eq!(local_mode(0o100644), 0o644);
    }

    #[test]
    fn a_link_below_the_destination_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("host")).unwrap();
        assert!(refuse_links(&root, &root.join("etc/passwd")).is_err());
        assert!(refuse_links(&root, &root.join("host")).is_err());
        assert!(refuse_links(&root, &root.join("new/file")).is_ok());
        // The destination itself may be a link.
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&root, &linked).unwrap();
        assert!(refuse_links(&linked, &linked.join("new")).is_ok());
    }
}
