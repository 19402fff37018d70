//! Cleanup that outlives the future that started it: a packaging thread
//! winding down after a cancel, an upload session being cancelled from a
//! `Drop`. Each holds a `Pending` while it works, and kiln waits for all of
//! them before it exits, so a temp file or a child process is gone by the
//! time the exit status is seen.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

static COUNT: Mutex<usize> = Mutex::new(0);
static CHANGED: Condvar = Condvar::new();

/// One piece of cleanup still running; the count drops with it.
#[must_use = "the cleanup counts as running only while this is held"]
pub struct Pending(());

impl Pending {
    /// Counts one more cleanup as running, until the result is dropped.
    pub fn start() -> Pending {
        let mut count = COUNT.lock().unwrap_or_else(|p| p.into_inner());
        *count += 1;
        Pending(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut count = COUNT.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.saturating_sub(1);
        CHANGED.notify_all();
    }
}

/// Waits until no cleanup is running, or `timeout`; true when all ended.
pub fn wait(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut count = COUNT.lock().unwrap_or_else(|p| p.into_inner());
    while *count > 0 {
        let now = Instant::now();
        if now >= deadline {
            tracing::warn!(pending = *count, "cleanup still running at exit");
            return false;
        }
        count = match CHANGED.wait_timeout(count, deadline - now) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_returns_once_the_last_pending_is_dropped() {
        let pending = Pending::start();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            tx.send(()).unwrap();
            wait(Duration::from_secs(60))
        });
        rx.recv().unwrap();
        drop(pending);
        assert!(waiter.join().unwrap());
    }
}
