//! `boot_command`: Packer's key syntax parsed into steps, and typed into
//! the guest's keyboard through QMP (`input-send-event`), as Packer's qemu
//! builder types it over VNC: one key event at a time, `boot_key_interval`
//! apart.

pub mod keys;
pub mod parse;

use std::future::Future;
use std::time::Duration;

pub use parse::{Key, KeyAction, ParseError, Step, parse};

use crate::qemu::{QemuError, Qmp};

/// Packer's pause after each key event when neither `boot_key_interval`
/// nor `PACKER_KEY_INTERVAL` says otherwise.
pub const DEFAULT_KEY_INTERVAL: Duration = Duration::from_millis(100);

/// The environment variable Packer reads the key interval from.
pub const KEY_INTERVAL_ENV: &str = "PACKER_KEY_INTERVAL";

/// The pause after each key event: `boot_key_interval` when set (and not
/// zero), else `PACKER_KEY_INTERVAL` when it holds a duration, else 100ms,
/// as Packer decides it.
pub fn key_interval(configured: Option<Duration>, env: Option<&str>) -> Duration {
    if let Some(d) = configured.filter(|d| !d.is_zero()) {
        return d;
    }
    env.and_then(|text| {
        // Packer takes any Go duration here, zero included.
        if text == "0" {
            return Some(Duration::ZERO);
        }
        match parse::parse(&[format!("<wait{text}>")]).ok()?.as_slice() {
            [Step::Wait(d)] => Some(*d),
            _ => None,
        }
    })
    .unwrap_or(DEFAULT_KEY_INTERVAL)
}

/// Something keys can be pressed on.
pub trait Keyboard {
    /// Why a key event did not reach the guest.
    type Error;
    /// Presses (`down`) or releases the key with QEMU's key code `qcode`.
    fn key(&self, qcode: &'static str, down: bool)
    -> impl Future<Output = Result<(), Self::Error>>;
}

impl Keyboard for Qmp {
    type Error = QemuError;

    async fn key(&self, qcode: &'static str, down: bool) -> Result<(), QemuError> {
        self.send_key(qcode, down).await
    }
}

/// Types the steps, pausing `interval` after each key event (Packer's VNC
/// driver does the same); Shift is held around the characters that need
/// it.
pub async fn type_steps<K: Keyboard>(
    keyboard: &K,
    steps: &[Step],
    interval: Duration,
) -> Result<(), K::Error> {
    let event = |qcode: &'static str, down: bool| async move {
        keyboard.key(qcode, down).await?;
        tokio::time::sleep(interval).await;
        Ok::<(), K::Error>(())
    };
    for step in steps {
        let (qcode, shift, action) = match *step {
            Step::Wait(d) => {
                tokio::time::sleep(d).await;
                continue;
            }
            Step::Key(Key::Special(special), action) => (special.qcode(), false, action),
            Step::Key(Key::Char(c), action) => match keys::char_key(c) {
                Some((qcode, shift)) => (qcode, shift, action),
                // The parser lets no such character through.
                None => continue,
            },
        };
        match action {
            KeyAction::On => {
                if shift {
                    event("shift", true).await?;
                }
                event(qcode, true).await?;
            }
            KeyAction::Off => {
                if shift {
                    event("shift", false).await?;
                }
                event(qcode, false).await?;
            }
            KeyAction::Press => {
                if shift {
                    event("shift", true).await?;
                }
                event(qcode, true).await?;
                event(qcode, false).await?;
                if shift {
                    event("shift", false).await?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<(String, bool)>>,
    }

    impl Keyboard for Recorder {
        type Error = std::convert::Infallible;

        async fn key(&self, qcode: &'static str, down: bool) -> Result<(), Self::Error> {
            self.events.lock().unwrap().push((qcode.to_string(), down));
            Ok(())
        }
    }

    #[tokio::test]
    async fn shift_is_held_around_shifted_characters() {
        let steps = parse(&["A:<leftCtrlOn>c<leftCtrlOff><wait1ms>x".to_string()]).unwrap();
        let keyboard = Recorder::default();
        let interval = Duration::from_millis(1);
        type_steps(&keyboard, &steps, interval).await.unwrap();
        let events = keyboard.events.lock().unwrap();
        let keys: Vec<(&str, bool)> = events.iter().map(|(k, d)| (k.as_str(), *d)).collect();
        assert_eq!(
            keys,
            [
                ("shift", true),
                ("a", true),
                ("a", false),
                ("shift", false),
                ("shift", true),
                ("semicolon", true),
                ("semicolon", false),
                ("shift", false),
                ("ctrl", true),
                ("c", true),
                ("c", false),
                ("ctrl", false),
                ("x", true),
                ("x", false),
            ]
        );
    }

    #[test]
    fn key_interval_follows_packer() {
        let ms = Duration::from_millis;
        assert_eq!(key_interval(None, None), ms(100));
        assert_eq!(key_interval(None, Some("20ms")), ms(20));
        assert_eq!(key_interval(None, Some("garbage")), ms(100));
        assert_eq!(key_interval(Some(ms(5)), Some("20ms")), ms(5));
        assert_eq!(key_interval(Some(Duration::ZERO), Some("20ms")), ms(20));
    }
}
