//! Reading a template file into JSON: bounded in size and depth, text
//! checked before parsing so a wrong encoding gets a position and a hint,
//! and duplicate keys reported rather than silently dropped.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

use super::Problem;

/// The largest template or var file read. Real ones are kilobytes; the
/// bound keeps `kiln validate /dev/zero` from reading forever.
const MAX_FILE_BYTES: usize = 16 << 20;

/// How deep arrays and objects may nest. serde_json stops at 128 on its
/// own; this lower bound comes first with a message that says what is wrong.
/// Packer templates nest four or five levels.
const MAX_DEPTH: usize = 64;

/// Why a file is not JSON kiln reads, before or beside a syntax error.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    /// Where (`line 3, column 7`), and what is wrong with the hint.
    Text {
        location: String,
        message: String,
    },
    Syntax(serde_json::Error),
}

/// The file's bytes, up to [`MAX_FILE_BYTES`].
pub fn read(path: &Path) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ReadError::Text {
            location: format!("byte {}", MAX_FILE_BYTES + 1),
            message: format!(
                "the file is larger than {}, the most kiln reads: is it a template?",
                crate::human::exact_bytes(MAX_FILE_BYTES)
            ),
        });
    }
    Ok(bytes)
}

/// The JSON, and the problems that do not stop decoding (duplicate keys,
/// at their JSON path).
pub fn decode(bytes: &[u8]) -> Result<(Json, Vec<Problem>), ReadError> {
    parse(text(bytes)?)
}

/// Checks the encoding: Packer reads templates with Go's encoding/json,
/// which takes UTF-8 only and rejects a byte-order mark.
fn text(bytes: &[u8]) -> Result<&str, ReadError> {
    let bad = |message: &str| ReadError::Text {
        location: "line 1, column 1 (byte 0)".into(),
        message: message.into(),
    };
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(bad(
            "the file starts with a byte-order mark (bytes EF BB BF), which JSON does not \
             allow (Packer rejects it too): save the file as UTF-8 without a BOM",
        ));
    }
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(bad(
            "the file is UTF-16 (it starts with a UTF-16 byte-order mark): save it as UTF-8",
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = 1 + good.iter().filter(|b| **b == b'\n').count();
        let line_start = good
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |newline| newline + 1);
        // The prefix is valid UTF-8, so the column counts characters.
        let column = 1 + String::from_utf8_lossy(&good[line_start..]).chars().count();
        ReadError::Text {
            location: format!("line {line}, column {column} (byte {})", e.valid_up_to()),
            message: format!(
                "the file is not UTF-8 (byte 0x{:02X} here): save it as UTF-8",
                bytes[e.valid_up_to()]
            ),
        }
    })
}

fn parse(text: &str) -> Result<(Json, Vec<Problem>), ReadError> {
    let duplicates = RefCell::new(Vec::new());
    let too_deep = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Strict {
        depth: 0,
        at: &At::Root,
        duplicates: &duplicates,
        too_deep: &too_deep,
    };
    let value = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match value {
        Ok(value) => Ok((value, duplicates.into_inner())),
        Err(e) if too_deep.get() => Err(ReadError::Text {
            location: format!("line {}, column {}", e.line(), e.column()),
            message: format!(
                "arrays and objects nest more than {MAX_DEPTH} levels deep here: \
                 no template needs that many"
            ),
        }),
        Err(e) => Err(ReadError::Syntax(e)),
    }
}

/// Where a value sits, built only when a duplicate key needs naming.
enum At<'a> {
    Root,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Root => Ok(()),
            At::Key(At::Root, k) => f.write_str(k),
            At::Key(parent, k) => write!(f, "{parent}.{k}"),
            At::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

#[derive(Clone, Copy)]
struct Strict<'a> {
    depth: usize,
    at: &'a At<'a>,
    duplicates: &'a RefCell<Vec<Problem>>,
    too_deep: &'a Cell<bool>,
}

impl<'a> Strict<'a> {
    fn nested(self) -> Result<Strict<'a>, ()> {
        if self.depth >= MAX_DEPTH {
            self.too_deep.set(true);
            return Err(());
        }
        Ok(Strict {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Json;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        // serde_json hands over finite numbers only; a NaN cannot come from JSON.
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let inner = self
            .nested()
            .map_err(|()| de::Error::custom("nested too deep"))?;
        let mut items = Vec::new();
        loop {
            let at = At::Index(self.at, items.len());
            let seed = Strict { at: &at, ..inner };
            match seq.next_element_seed(seed)? {
                Some(v) => items.push(v),
                None => break,
            }
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let inner = self
            .nested()
            .map_err(|()| de::Error::custom("nested too deep"))?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let at = At::Key(self.at, &key);
            let value = map.next_value_seed(Strict { at: &at, ..inner })?;
            if out.contains_key(&key) {
                self.duplicates.borrow_mut().push(Problem {
                    path: at.to_string(),
                    message: "the key appears more than once in this object; only the last \
                              value would count (as in Packer): remove the others"
                        .into(),
                });
            }
            out.insert(key, value);
        }
        Ok(Json::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_error(bytes: &[u8]) -> (String, String) {
        match text(bytes) {
            Err(ReadError::Text { location, message }) => (location, message),
            other => panic!("expected a text error, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn encodings_are_named_with_a_position_and_a_hint() {
        let (at, message) = text_error(b"\xEF\xBB\xBF{}");
        assert_eq!(at, "line 1, column 1 (byte 0)");
        assert!(message.contains("byte-order mark"), "{message}");
        let (_, message) = text_error(b"\xFF\xFE{\0}\0");
        assert!(message.contains("UTF-16"), "{message}");
        let (at, message) = text_error(b"{\n  \"caf\xE9\": 1}");
        assert_eq!(at, "line 2, column 7 (byte 8)");
        assert!(message.contains("0xE9"), "{message}");
        assert!(message.contains("save it as UTF-8"), "{message}");
        // Columns count characters: é is two bytes, one column.
        let (at, _) = text_error(b"{\"\xC3\xA9\": \"\xFF\"}");
        assert_eq!(at, "line 1, column 8 (byte 8)");
    }

    #[test]
    fn duplicate_keys_are_named_by_their_path() {
        let (value, problems) =
            parse(r#"{"a": [{"x": 1, "y": 2, "x": 3}], "b": 1, "b": 2}"#).unwrap();
        assert_eq!(value["a"][0]["x"], 3);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["a[0].x", "b"]);
    }

    #[test]
    fn depth_is_bounded_with_a_position() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        match parse(&deep) {
            Err(ReadError::Text { location, message }) => {
                assert!(location.starts_with("line 1, column"), "{location}");
                assert!(message.contains("64 levels"), "{message}");
            }
            other => panic!("expected a depth error, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn numbers_keep_their_kind() {
        let (value, _) = parse(r#"{"i": -3, "u": 18446744073709551615, "f": 1.5}"#).unwrap();
        assert!(value["i"].is_i64());
        assert!(value["u"].is_u64());
        assert!(value["f"].is_f64());
        assert!(matches!(parse("1e400"), Err(ReadError::Syntax(_))));
    }
}
