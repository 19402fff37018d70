//! Diagnostic logs (`tracing`): off unless `KILN_LOG` is set (e.g.
//! `KILN_LOG=debug`), to stderr or to `KILN_LOG_PATH`. Secrets are masked
//! here too.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use super::redact::Redactor;

static SECRETS: OnceLock<Mutex<Redactor>> = OnceLock::new();

fn secrets() -> &'static Mutex<Redactor> {
    SECRETS.get_or_init(|| Mutex::new(Redactor::default()))
}

/// Values that must never reach a log line.
pub fn set_secrets(values: &[String]) {
    if let Ok(mut redactor) = secrets().lock() {
        *redactor = Redactor::new(values);
    }
}

struct RedactingWriter {
    inner: Box<dyn Write + Send>,
}

impl Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let masked = match secrets().lock() {
            Ok(redactor) => redactor.redact(&text),
            Err(_) => text.into_owned(),
        };
        self.inner.write_all(masked.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub fn init() {
    let Ok(filter) = std::env::var("KILN_LOG") else {
        return;
    };
    let filter = match filter.as_str() {
        "1" | "true" => "kiln=debug".to_string(),
        other => other.to_string(),
    };
    let path = std::env::var_os("KILN_LOG_PATH");
    let make_writer = move || -> RedactingWriter {
        let inner: Box<dyn Write + Send> = match &path {
            Some(path) => match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                Ok(file) => Box::new(file),
                Err(_) => Box::new(std::io::stderr()),
            },
            None => Box::new(std::io::stderr()),
        };
        RedactingWriter { inner }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(make_writer)
        .with_ansi(false)
        .try_init();
}
