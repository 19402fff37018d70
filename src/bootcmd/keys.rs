//! Boot command keys as QEMU's key codes (`QKeyCode`, the names QMP's
//! `input-send-event` takes), for a US keyboard layout, which is what
//! Packer's VNC typing assumes too.

/// A named key of Packer's boot command syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Special {
    Bs,
    Del,
    Enter,
    Esc,
    F1,
    F2,
    F3,
    F4,
    F5,
    F6,
    F7,
    F8,
    F9,
    F10,
    F11,
    F12,
    Return,
    Tab,
    Up,
    Down,
    Left,
    Right,
    Spacebar,
    Insert,
    Home,
    End,
    PageUp,
    PageDown,
    LeftAlt,
    LeftCtrl,
    LeftShift,
    RightAlt,
    RightCtrl,
    RightShift,
    LeftSuper,
    RightSuper,
}

/// Each key's name in the boot command (matched without regard to case)
/// and its QEMU key code.
const SPECIALS: &[(Special, &str, &str)] = &[
    (Special::Bs, "bs", "backspace"),
    (Special::Del, "del", "delete"),
    (Special::Enter, "enter", "ret"),
    (Special::Esc, "esc", "esc"),
    (Special::F1, "f1", "f1"),
    (Special::F2, "f2", "f2"),
    (Special::F3, "f3", "f3"),
    (Special::F4, "f4", "f4"),
    (Special::F5, "f5", "f5"),
    (Special::F6, "f6", "f6"),
    (Special::F7, "f7", "f7"),
    (Special::F8, "f8", "f8"),
    (Special::F9, "f9", "f9"),
    (Special::F10, "f10", "f10"),
    (Special::F11, "f11", "f11"),
    (Special::F12, "f12", "f12"),
    (Special::Return, "return", "ret"),
    (Special::Tab, "tab", "tab"),
    (Special::Up, "up", "up"),
    (Special::Down, "down", "down"),
    (Special::Left, "left", "left"),
    (Special::Right, "right", "right"),
    (Special::Spacebar, "spacebar", "spc"),
    (Special::Insert, "insert", "insert"),
    (Special::Home, "home", "home"),
    (Special::End, "end", "end"),
    (Special::PageUp, "pageUp", "pgup"),
    (Special::PageDown, "pageDown", "pgdn"),
    (Special::LeftAlt, "leftAlt", "alt"),
    (Special::LeftCtrl, "leftCtrl", "ctrl"),
    (Special::LeftShift, "leftShift", "shift"),
    (Special::RightAlt, "rightAlt", "alt_r"),
    (Special::RightCtrl, "rightCtrl", "ctrl_r"),
    (Special::RightShift, "rightShift", "shift_r"),
    (Special::LeftSuper, "leftSuper", "meta_l"),
    (Special::RightSuper, "rightSuper", "meta_r"),
];

impl Special {
    /// The key a boot command names (`enter`, `PageUp`, ...), in any case.
    pub fn from_name(name: &str) -> Option<Special> {
        SPECIALS
            .iter()
            .find(|(_, known, _)| known.eq_ignore_ascii_case(name))
            .map(|(special, _, _)| *special)
    }

    /// QEMU's code for the key.
    pub fn qcode(self) -> &'static str {
        SPECIALS
            .iter()
            .find(|(special, _, _)| *special == self)
            .map(|(_, _, qcode)| *qcode)
            .unwrap_or("ret")
    }

    /// Every name, as `<bs>, <del>, ...`, for error messages.
    pub fn names() -> String {
        SPECIALS
            .iter()
            .map(|(_, name, _)| format!("<{name}>"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The key that types `c` on a US keyboard, and whether Shift is held for
/// it; `None` for a character no key types.
pub fn char_key(c: char) -> Option<(&'static str, bool)> {
    const LETTERS: [&str; 26] = [
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r",
        "s", "t", "u", "v", "w", "x", "y", "z",
    ];
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    let key = match c {
        'a'..='z' => (LETTERS[(c as u8 - b'a') as usize], false),
        'A'..='Z' => (LETTERS[(c as u8 - b'A') as usize], true),
        '0'..='9' => (DIGITS[(c as u8 - b'0') as usize], false),
        ' ' => ("spc", false),
        '\n' | '\r' => ("ret", false),
        '\t' => ("tab", false),
        '-' => ("minus", false),
        '_' => ("minus", true),
        '=' => ("equal", false),
        '+' => ("equal", true),
        '[' => ("bracket_left", false),
        '{' => ("bracket_left", true),
        ']' => ("bracket_right", false),
        '}' => ("bracket_right", true),
        '\\' => ("backslash", false),
        '|' => ("backslash", true),
        ';' => ("semicolon", false),
        ':' => ("semicolon", true),
        '\'' => ("apostrophe", false),
        '"' => ("apostrophe", true),
        '`' => ("grave_accent", false),
        '~' => ("grave_accent", true),
        ',' => ("comma", false),
        '<' => ("comma", true),
        '.' => ("dot", false),
        '>' => ("dot", true),
        '/' => ("slash", false),
        '?' => ("slash", true),
        '!' => ("1", true),
        '@' => ("2", true),
        '#' => ("3", true),
        '$' => ("4", true),
        '%' => ("5", true),
        '^' => ("6", true),
        '&' => ("7", true),
        '*' => ("8", true),
        '(' => ("9", true),
        ')' => ("0", true),
        _ => return None,
    };
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_printable_ascii_character_has_a_key() {
        for c in ' '..='~' {
            assert!(char_key(c).is_some(), "{c:?}");
        }
        assert_eq!(char_key('A'), Some(("a", true)));
        assert_eq!(char_key(':'), Some(("semicolon", true)));
        assert_eq!(char_key('é'), None);
    }

    #[test]
    fn names_match_in_any_case() {
        assert_eq!(Special::from_name("PAGEDOWN"), Some(Special::PageDown));
        assert_eq!(
            Special::from_name("leftsuper").map(Special::qcode),
            Some("meta_l")
        );
        assert_eq!(
            Special::from_name("return").map(Special::qcode),
            Some("ret")
        );
        assert_eq!(Special::from_name("entre"), None);
    }
}
