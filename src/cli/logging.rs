//! Diagnostic logs (`tracing`): off unless `KILN_LOG` (e.g.
//! `KILN_LOG=debug`) or Packer's `PACKER_LOG=1` is set, to stderr or to
//! `KILN_LOG_PATH` (or `PACKER_LOG_PATH`). Secrets are masked
//! here too, with every secret the process knows ([`super::redact::known`]).

use std::io::Write;

use tracing_subscriber::util::SubscriberInitExt as _;

use super::redact;

/// Masks each write, which the formatter makes once per event: a secret
/// inside an event, even one spanning lines, is seen whole.
struct RedactingWriter<W: Write> {
    inner: W,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let masked = redact::known().redact(&text);
        self.inner.write_all(masked.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn subscriber<W, F>(filter: &str, make_inner: F) -> impl tracing::Subscriber + Send + Sync
where
    W: Write + 'static,
    F: Fn() -> W + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(move || RedactingWriter {
            inner: make_inner(),
        })
        .with_ansi(false)
        .finish()
}

/// Where the log goes and what it holds, from the environment: `KILN_LOG`
/// (a filter, or `1`/`true` for kiln's debug events) and `KILN_LOG_PATH`;
/// Packer's `PACKER_LOG` (any value but empty or `0`) and `PACKER_LOG_PATH`
/// are honoured when kiln's are not set, so a Packer user's habit works.
fn settings(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<(String, Option<std::ffi::OsString>)> {
    let kiln = env("KILN_LOG").and_then(|v| v.into_string().ok());
    let filter = match kiln {
        Some(filter) => match filter.as_str() {
            "1" | "true" => "kiln=debug".to_string(),
            other => other.to_string(),
        },
        None => {
            let packer = env("PACKER_LOG")?;
            if packer.is_empty() || packer == "0" {
                return None;
            }
            "kiln=debug".to_string()
        }
    };
    let path = env("KILN_LOG_PATH").or_else(|| env("PACKER_LOG_PATH"));
    Some((filter, path.filter(|p| !p.is_empty())))
}

/// Starts the debug log when `KILN_LOG` or `PACKER_LOG` asks for it (to
/// stderr, or `KILN_LOG_PATH`); otherwise does nothing.
pub fn init() {
    let Some((filter, path)) = settings(|name| std::env::var_os(name)) else {
        return;
    };
    let make_inner = move || -> Box<dyn Write + Send> {
        match &path {
            Some(path) => match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                Ok(file) => Box::new(file),
                Err(_) => Box::new(std::io::stderr()),
            },
            None => Box::new(std::io::stderr()),
        }
    };
    // Also routes the `log` records of dependencies (russh) through here.
    let _ = subscriber(&filter, make_inner).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::testing::SharedBuf;

    fn env_of(
        vars: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<std::ffi::OsString> {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.into())
        }
    }

    #[test]
    fn kiln_log_wins_and_packer_log_is_honoured() {
        assert_eq!(settings(env_of(&[])), None);
        assert_eq!(
            settings(env_of(&[("KILN_LOG", "1")])),
            Some(("kiln=debug".into(), None))
        );
        assert_eq!(
            settings(env_of(&[
                ("KILN_LOG", "kiln::ssh=trace"),
                ("PACKER_LOG", "1")
            ])),
            Some(("kiln::ssh=trace".into(), None))
        );
        assert_eq!(
            settings(env_of(&[
                ("PACKER_LOG", "1"),
                ("PACKER_LOG_PATH", "/tmp/p.log")
            ])),
            Some(("kiln=debug".into(), Some("/tmp/p.log".into())))
        );
        assert_eq!(
            settings(env_of(&[
                ("PACKER_LOG", "yes"),
                ("PACKER_LOG_PATH", "/tmp/p.log"),
                ("KILN_LOG_PATH", "/tmp/k.log")
            ])),
            Some(("kiln=debug".into(), Some("/tmp/k.log".into())))
        );
        assert_eq!(settings(env_of(&[("PACKER_LOG", "0")])), None);
        assert_eq!(settings(env_of(&[("PACKER_LOG", "")])), None);
    }

    #[test]
    fn debug_logged_argv_with_quotes_and_backslashes_is_masked() {
        let secret = "lo\"g-se\\cret\nsecond-line";
        redact::remember(&[secret.to_string()]);
        let sink = SharedBuf::default();
        let inner = sink.clone();
        let argv = vec![
            "-name".to_string(),
            format!("vm,password={secret}"),
            "-smbios".to_string(),
            format!("type=11,value={secret}"),
        ];
        tracing::subscriber::with_default(subscriber("debug", move || inner.clone()), || {
            tracing::debug!(build = "b", ?argv, "launching QEMU");
            tracing::debug!("plain {secret}");
            tracing::debug!(%secret, "displayed");
        });
        let text = sink.text();
        assert!(text.contains("launching QEMU"), "{text}");
        for part in ["lo\"g", "lo\\\"g", "se\\cret", "se\\\\cret", "second-line"] {
            assert!(!text.contains(part), "{part:?} leaked:\n{text}");
        }
        assert_eq!(text.matches(redact::MASK).count(), 4, "{text}");
    }
}
