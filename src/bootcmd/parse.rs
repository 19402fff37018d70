//! Packer's boot command syntax (packer-plugin-sdk `bootcommand`'s PEG
//! grammar): `<wait>`, `<waitXX>`, special keys with optional `On`/`Off`,
//! a single character held with `<xOn>`/`<xOff>`, and literal text.
//!
//! Packer joins the `boot_command` entries into one string before
//! parsing, so a token may span entries; kiln does the same and keeps
//! track of which entry each token started in, for the error message.
//!
//! One deliberate difference: Packer types an unknown `<name>` (a typo such
//! as `<entre>`) as the literal text `<entre>`, which is never what was
//! meant; kiln rejects it. A `<` that does not start a word (`< /dev/null`,
//! `a<b`) is still literal text.

use std::time::Duration;

use super::keys::{Special, char_key};

/// Whether a key is pressed and released, held down, or let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    /// Down, then up.
    Press,
    /// Down only (`<leftCtrlOn>`).
    On,
    /// Up only (`<leftCtrlOff>`).
    Off,
}

/// A key of the boot command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A named key such as `<enter>` or `<leftAlt>`.
    Special(Special),
    /// A character of literal text.
    Char(char),
}

/// One step of a boot command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `<wait>` (one second), `<wait5>` (seconds), `<wait1m30s>` (a Go
    /// duration).
    Wait(Duration),
    /// A key to press, hold or release.
    Key(Key, KeyAction),
}

/// Why a boot command cannot be typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    /// The `boot_command` entry the bad token starts in.
    pub entry: usize,
    /// What is wrong, naming the token.
    pub reason: String,
}

/// Parses the entries of a `boot_command` (already rendered) into steps.
pub fn parse(entries: &[String]) -> Result<Vec<Step>, ParseError> {
    let joined: String = entries.concat();
    // The entry each byte offset of `joined` belongs to.
    let mut starts = Vec::with_capacity(entries.len());
    let mut offset = 0;
    for entry in entries {
        starts.push(offset);
        offset += entry.len();
    }
    let entry_at = |at: usize| starts.iter().rposition(|start| *start <= at).unwrap_or(0);

    let mut steps = Vec::new();
    let mut rest = joined.as_str();
    while let Some(c) = rest.chars().next() {
        let at = joined.len() - rest.len();
        if c == '<' {
            match token(rest) {
                Ok(Some((step, len))) => {
                    steps.push(step);
                    rest = &rest[len..];
                    continue;
                }
                Ok(None) => {}
                Err(reason) => {
                    return Err(ParseError {
                        entry: entry_at(at),
                        reason,
                    });
                }
            }
        }
        if char_key(c).is_none() {
            return Err(ParseError {
                entry: entry_at(at),
                reason: format!(
                    "cannot type {c:?}: only ASCII text and the named keys such as <enter> can be typed"
                ),
            });
        }
        steps.push(Step::Key(Key::Char(c), KeyAction::Press));
        rest = &rest[c.len_utf8()..];
    }
    Ok(steps)
}

/// A `<...>` token at the start of `text`: the step and its length in
/// bytes; `None` when the `<` is literal text; an error for a `<word>`
/// that names no key or a wait that is not positive.
fn token(text: &str) -> Result<Option<(Step, usize)>, String> {
    let Some(close) = text.find('>') else {
        return Ok(None);
    };
    let inner = &text[1..close];
    let len = close + 1;
    let shown = &text[..len];
    // Case matters for "wait", as in Packer's grammar.
    if let Some(amount) = inner.strip_prefix("wait") {
        match wait_duration(amount) {
            Ok(d) if !d.is_zero() => return Ok(Some((Step::Wait(d), len))),
            Ok(_) | Err(Negative(true)) => {
                return Err(format!(
                    "{shown}: a wait must be positive, such as <wait>, <wait5> or <wait500ms>"
                ));
            }
            // `<waitress>`: not a wait; maybe a key name, maybe a typo.
            Err(Negative(false)) => {}
        }
    }
    if let Some(special) = Special::from_name(inner) {
        return Ok(Some((
            Step::Key(Key::Special(special), KeyAction::Press),
            len,
        )));
    }
    let (name, action) = split_action(inner);
    if let Some(special) = Special::from_name(name) {
        return Ok(Some((Step::Key(Key::Special(special), action), len)));
    }
    // `<aOn>`: one character held or released.
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next())
        && action != KeyAction::Press
    {
        if char_key(c).is_none() {
            return Err(format!("{shown}: cannot type {c:?}"));
        }
        return Ok(Some((Step::Key(Key::Char(c), action), len)));
    }
    let word = !inner.is_empty()
        && inner.starts_with(|c: char| c.is_ascii_alphabetic())
        && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
    if word {
        return Err(format!(
            "unknown key {shown}: expected one of {}, <wait>, <waitXX> or text",
            Special::names()
        ));
    }
    Ok(None)
}

/// `On`/`Off` (any case) at the end of a token.
fn split_action(inner: &str) -> (&str, KeyAction) {
    let lower = inner.to_ascii_lowercase();
    if lower.len() > 3 && lower.ends_with("off") {
        (&inner[..inner.len() - 3], KeyAction::Off)
    } else if lower.len() > 2 && lower.ends_with("on") {
        (&inner[..inner.len() - 2], KeyAction::On)
    } else {
        (inner, KeyAction::Press)
    }
}

/// Not a duration; `.0` tells whether it is one, only negative.
struct Negative(bool);

/// What follows `wait`: nothing (one second), whole seconds, or a Go
/// duration.
fn wait_duration(amount: &str) -> Result<Duration, Negative> {
    if amount.is_empty() {
        return Ok(Duration::from_secs(1));
    }
    if amount.bytes().all(|b| b.is_ascii_digit()) {
        return amount
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| Negative(false));
    }
    go_duration(amount)
}

/// A Go duration (`1m30s`, `1.5s`, `500ms`).
fn go_duration(text: &str) -> Result<Duration, Negative> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or(Negative(false))?;
        let number: f64 = rest[..number_len].parse().map_err(|_| Negative(false))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(Negative(false)),
        };
        nanos += number * scale;
        rest = &rest[unit_len..];
    }
    if negative && nanos > 0.0 {
        return Err(Negative(true));
    }
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(Negative(false));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Vec<Step>, ParseError> {
        parse(&[text.to_string()])
    }

    fn press(c: char) -> Step {
        Step::Key(Key::Char(c), KeyAction::Press)
    }

    #[test]
    fn text_and_special_keys() {
        assert_eq!(
            one("a<Enter><esc><f10><F1><pageUp><spacebar>").unwrap(),
            vec![
                press('a'),
                Step::Key(Key::Special(Special::Enter), KeyAction::Press),
                Step::Key(Key::Special(Special::Esc), KeyAction::Press),
                Step::Key(Key::Special(Special::F10), KeyAction::Press),
                Step::Key(Key::Special(Special::F1), KeyAction::Press),
                Step::Key(Key::Special(Special::PageUp), KeyAction::Press),
                Step::Key(Key::Special(Special::Spacebar), KeyAction::Press),
            ]
        );
    }

    #[test]
    fn waits() {
        let waits = |text: &str| -> Vec<Duration> {
            one(text)
                .unwrap()
                .into_iter()
                .map(|step| match step {
                    Step::Wait(d) => d,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(
            waits("<wait><wait5><wait10><wait1m><wait500ms><wait1m30s><wait1.5s>"),
            [1000, 5000, 10000, 60000, 500, 90000, 1500].map(Duration::from_millis)
        );
        for bad in ["<wait0>", "<wait0s>", "<wait-1s>"] {
            let err = one(bad).unwrap_err();
            assert!(err.reason.contains(bad), "{err}");
            assert!(err.reason.contains("positive"), "{err}");
        }
    }

    #[test]
    fn holds_and_releases() {
        assert_eq!(
            one("<leftCtrlOn>c<leftCtrlOFF><leftAltOn><aOn><aOff><rightShift>").unwrap(),
            vec![
                Step::Key(Key::Special(Special::LeftCtrl), KeyAction::On),
                press('c'),
                Step::Key(Key::Special(Special::LeftCtrl), KeyAction::Off),
                Step::Key(Key::Special(Special::LeftAlt), KeyAction::On),
                Step::Key(Key::Char('a'), KeyAction::On),
                Step::Key(Key::Char('a'), KeyAction::Off),
                Step::Key(Key::Special(Special::RightShift), KeyAction::Press),
            ]
        );
    }

    #[test]
    fn a_lone_angle_bracket_is_text() {
        assert_eq!(
            one("a<b").unwrap(),
            vec![press('a'), press('<'), press('b')]
        );
        assert_eq!(one("< /x>").unwrap().len(), 5);
        assert_eq!(one("<>").unwrap(), vec![press('<'), press('>')]);
    }

    #[test]
    fn tokens_may_span_entries_and_errors_name_the_entry() {
        let entries: Vec<String> = ["<wait>", "abc", "<ent", "er>", "x<entre>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let err = parse(&entries).unwrap_err();
        assert_eq!(err.entry, 4);
        assert!(err.reason.starts_with("unknown key <entre>"), "{err}");
        assert!(parse(&entries[..4]).is_ok());
    }

    #[test]
    fn untypable_characters_are_rejected() {
        let err = one("café").unwrap_err();
        assert!(err.reason.contains("'é'"), "{err}");
    }
}
