//! A row's key as hard-delete detection keeps it: the key column's JSON value, the plain text
//! the databases see, and the 32-bit digest both sides of a check agree on.
//!
//! Every driver renders an integer key as a JSON number and any other key as a JSON string, so
//! the key of a delivered row, read back from its JSON, and the key a driver reads from the
//! table name the same value. The digest is the first four bytes of the MD5 of the plain text:
//! PostgreSQL (`md5(key::text)`) and MariaDB (`MD5(CAST(key AS CHAR))`) compute the same in SQL,
//! so a range of keys can be summed inside the database and compared with the inventory's sum
//! without reading a key. This module imports nothing from the crate.

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use serde_json::value::RawValue;

/// One key: its JSON value, normalized (a number as written, a string re-encoded by
/// serde_json), so that one key has one text whichever side produced it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    json: String,
}

impl Key {
    /// The key of a JSON value as a row carries it; `None` for a value that cannot be a key
    /// (null, an object, an array, a boolean).
    pub fn from_json(raw: &str) -> Option<Key> {
        let raw = raw.trim();
        match raw.as_bytes().first()? {
            b'"' => {
                let text: String = serde_json::from_str(raw).ok()?;
                Some(Key::text(&text))
            }
            b'-' | b'0'..=b'9' => Some(Key {
                json: raw.to_owned(),
            }),
            _ => None,
        }
    }

    /// A key the database rendered as text: `is_number` when the column holds integers.
    pub fn from_text(text: &str, is_number: bool) -> Key {
        match is_number {
            true => Key {
                json: text.to_owned(),
            },
            false => Key::text(text),
        }
    }

    fn text(text: &str) -> Key {
        Key {
            json: serde_json::Value::String(text.to_owned()).to_string(),
        }
    }

    /// A key as the state store kept it (its JSON text).
    pub fn stored(json: String) -> Key {
        Key { json }
    }

    /// The JSON value, as a delete row carries it.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Whether the key is a number (an integer column).
    pub fn is_number(&self) -> bool {
        !self.json.starts_with('"')
    }

    /// The text the database casts the key to: the digits of a number, the string itself.
    pub fn plain(&self) -> String {
        match self.is_number() {
            true => self.json.clone(),
            false => serde_json::from_str(&self.json).unwrap_or_else(|_| self.json.clone()),
        }
    }

    /// The first four bytes of the MD5 of [`Key::plain`], big-endian.
    pub fn hash(&self) -> u32 {
        hash_text(&self.plain())
    }
}

/// Per range of the digest space: how many keys, and the sum of their digests (below 2^63
/// for up to 2^31 keys).
pub type Digests = BTreeMap<u32, (i64, i64)>;

/// Digests as SQL returns them: `(range, count, sum)` rows.
pub fn digests_from_rows(rows: Vec<(i64, i64, i64)>) -> Digests {
    rows.into_iter()
        .map(|(range, count, sum)| (range as u32, (count, sum)))
        .collect()
}

/// The digest of one key's plain text, as the databases compute it in SQL.
pub fn hash_text(text: &str) -> u32 {
    let digest = Md5::digest(text.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The range (bucket) of a key digest when the digest space is cut into `2^bits` ranges.
pub fn range_of(hash: u32, bits: u32) -> u32 {
    match bits {
        0 => 0,
        bits => hash >> (32 - bits.min(32)),
    }
}

/// The key column's value in a row object (as JSON), if the row shows it. Every checkpoint
/// of a pipeline with an inventory reads each row's key, so the row is read only up to its
/// key (the first column, often): the walk stops there, without building a map. Rows are as
/// the drivers wrote them, so the rest needs no checking.
pub fn key_of_row(row: &[u8], column: &str) -> Option<Key> {
    if let Some(key) = leading_integer(row, column) {
        return Some(key);
    }
    let found = std::cell::Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(row);
    // Stopping is an error to serde: the value found is kept aside, and a row that does not
    // show the key (or is not an object) has none.
    let _stopped = serde::Deserializer::deserialize_map(
        &mut deserializer,
        ValueOf {
            name: column,
            found: &found,
        },
    );
    Key::from_json(found.get()?.get())
}

/// The key when it is the row's first member and an integer, as drivers write most rows
/// (`{"id":7,…}`): read without a parser. `None` for anything else (another first member, a
/// name that JSON escapes, another value), which the parser then reads.
fn leading_integer(row: &[u8], column: &str) -> Option<Key> {
    let name = column.as_bytes();
    if name
        .iter()
        .any(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
    {
        return None;
    }
    let rest = row
        .strip_prefix(b"{\"")?
        .strip_prefix(name)?
        .strip_prefix(b"\":")?;
    let end = rest.iter().position(|&byte| byte == b',' || byte == b'}')?;
    let value = &rest[..end];
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Key::from_json(std::str::from_utf8(value).ok()?)
}

/// Finds the value of one member of a JSON object, and stops there.
struct ValueOf<'c, 'de> {
    name: &'c str,
    found: &'c std::cell::Cell<Option<&'de RawValue>>,
}

impl<'de> serde::de::Visitor<'de> for ValueOf<'_, 'de> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(is_it) = map.next_key_seed(NameIs(self.name))? {
            if is_it {
                self.found.set(Some(map.next_value()?));
                return Err(serde::de::Error::custom("found"));
            }
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Whether a member's name is the one looked for, compared without copying it.
struct NameIs<'c>(&'c str);

impl<'de> serde::de::DeserializeSeed<'de> for NameIs<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for NameIs<'_> {
    type Value = bool;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<bool, E> {
        Ok(name == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_has_one_text_whichever_side_produced_it() {
        assert_eq!(Key::from_json("7"), Some(Key::from_text("7", true)));
        assert_eq!(
            Key::from_json(r#""a\u00e9/\"b""#),
            Some(Key::from_text("aé/\"b", false))
        );
        assert_eq!(Key::from_text("aé", false).plain(), "aé");
        assert_eq!(Key::from_text("-12", true).plain(), "-12");
        assert!(Key::from_json("null").is_none());
        assert!(Key::from_json("{}").is_none());
        assert_eq!(
            key_of_row(br#"{"id":3,"code":"x"}"#, "code"),
            Some(Key::from_text("x", false))
        );
        assert_eq!(key_of_row(br#"{"id":3}"#, "code"), None);
        // The first member, an integer, read without the parser; anything else through it.
        assert_eq!(
            key_of_row(br#"{"id":-12,"x":"a"}"#, "id"),
            Some(Key::from_text("-12", true))
        );
        assert_eq!(key_of_row(br#"{"id":7}"#, "id"), Key::from_json("7"));
        assert_eq!(key_of_row(br#"{"id":1.5}"#, "id"), Key::from_json("1.5"));
        assert_eq!(
            key_of_row(br#"{"idx":1,"id":2}"#, "id"),
            Some(Key::from_text("2", true))
        );
        assert_eq!(
            key_of_row(br#"{"id":"7","n":1}"#, "id"),
            Some(Key::from_text("7", false))
        );
        assert_eq!(key_of_row(br#"{"id":}"#, "id"), None);
        assert_eq!(
            key_of_row(br#"{"a\"b":[1,{"c":2}],"k\u00e9":"v"}"#, "ké"),
            Some(Key::from_text("v", false))
        );
    }

    #[test]
    fn digests_match_what_sql_computes() {
        // md5('7') = 8f14e45fceea167a5a36dedd4bea2543 in PostgreSQL and MariaDB alike.
        assert_eq!(hash_text("7"), 0x8f14e45f);
        assert_eq!(Key::from_text("7", true).hash(), 0x8f14e45f);
        assert_eq!(range_of(0x8f14e45f, 0), 0);
        assert_eq!(range_of(0x8f14e45f, 4), 0x8);
        assert_eq!(range_of(0x8f14e45f, 32), 0x8f14e45f);
    }
}
