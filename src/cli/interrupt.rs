//! SIGINT and SIGTERM: the first cancels the running work so it cleans up
//! and returns; a second one ends kiln at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::exit;
use super::ui::Ui;

/// The cancel token every command hands to the library, and which signal
/// (if any) fired it.
#[derive(Clone)]
pub struct Interrupt {
    cancel: CancellationToken,
    /// 0 until a signal arrives, then its exit status (130 or 143).
    status: Arc<AtomicU8>,
}

impl Interrupt {
    /// Installs the handlers; call once per command, inside the runtime.
    pub fn install(ui: Ui) -> Self {
        let interrupt = Interrupt {
            cancel: CancellationToken::new(),
            status: Arc::new(AtomicU8::new(0)),
        };
        let handler = interrupt.clone();
        tokio::spawn(async move { handler.watch(ui).await });
        interrupt
    }

    /// Cancelled when SIGINT or SIGTERM arrives.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The exit status for the signal that arrived, if one did.
    pub fn exit_status(&self) -> Option<u8> {
        match self.status.load(Ordering::SeqCst) {
            0 => None,
            status => Some(status),
        }
    }

    async fn watch(self, ui: Ui) {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let first = tokio::select! {
            _ = int.recv() => exit::SIGINT,
            _ = term.recv() => exit::SIGTERM,
        };
        self.status.store(first, Ordering::SeqCst);
        ui.error_global(
            "Interrupted: cancelling and cleaning up (interrupt again to quit at once)...",
        );
        self.cancel.cancel();
        let second = tokio::select! {
            _ = int.recv() => exit::SIGINT,
            _ = term.recv() => exit::SIGTERM,
        };
        // Children run with PR_SET_PDEATHSIG, so they die with kiln.
        std::process::exit(i32::from(second));
    }
}
