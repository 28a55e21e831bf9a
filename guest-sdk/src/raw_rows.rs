//! Rows borrowed from the batch text: for transforms that touch a few columns of each row.
//!
//! [`crate::Batch`] parses every value of every row into an owned [`crate::Value`] and writes
//! each one out again. A [`RawRow`] keeps each value as the JSON text it came in (a slice of
//! the batch), so a column the transform does not touch costs one scan to find its end and
//! one copy on the way out, and is re-emitted exactly as it came. Read a column with
//! [`RawRow::get_str`] or [`RawRow::get_as`] (borrowing where the text has no escapes), and
//! write one with [`RawRow::set`].
//!
//! ```no_run
//! use tidemark_sdk::raw_rows::{self, RawChange};
//! use tidemark_sdk::{RawBatch, Result};
//!
//! /// Upper-cases `name`; every other column passes through as it came.
//! fn shout(batch: RawBatch) -> Result<String> {
//!     let mut changes: Vec<RawChange<'_>> = raw_rows::parse(&batch.rows)?;
//!     for change in &mut changes {
//!         if let Some(name) = change.row.get_str("name") {
//!             let loud = name.to_uppercase();
//!             change.row.set("name", &loud)?;
//!         }
//!     }
//!     Ok(raw_rows::to_json(&changes))
//! }
//!
//! tidemark_sdk::transform_raw!(shout);
//! ```

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{Error, Op, Result};

/// One element of a batch, its row borrowed from the batch text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChange<'a> {
    pub op: Op,
    #[serde(borrow)]
    pub row: RawRow<'a>,
}

impl RawChange<'_> {
    pub fn is_delete(&self) -> bool {
        self.op == Op::Delete
    }
}

/// A row's columns in their order, each value as JSON text.
#[derive(Debug, Default)]
pub struct RawRow<'a> {
    columns: Vec<(Text<'a>, Cow<'a, RawValue>)>,
}

impl<'a> RawRow<'a> {
    /// Column `name`'s value as JSON text.
    pub fn get(&self, name: &str) -> Option<&RawValue> {
        self.position(name)
            .map(|index| self.columns[index].1.as_ref())
    }

    /// Column `name` when it holds a string; borrowed when the string has no escapes.
    pub fn get_str(&self, name: &str) -> Option<Cow<'_, str>> {
        let text: Text<'_> = serde_json::from_str(self.get(name)?.get()).ok()?;
        Some(text.0)
    }

    /// Column `name` read as `T`; `Ok(None)` when the row has no such column.
    pub fn get_as<'r, T: Deserialize<'r>>(&'r self, name: &str) -> Result<Option<T>> {
        self.get(name)
            .map(|value| serde_json::from_str(value.get()))
            .transpose()
            .map_err(|err| Error::fatal(format!("column {name:?}: {err}")))
    }

    /// Sets column `name` to `value`, in its place when the row has it, else at the end.
    pub fn set<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
        let value = Cow::Owned(serde_json::value::to_raw_value(value)?);
        match self.position(name) {
            Some(index) => self.columns[index].1 = value,
            None => self
                .columns
                .push((Text(Cow::Owned(name.to_owned())), value)),
        }
        Ok(())
    }

    /// Removes column `name`; whether the row had it.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.position(name) {
            Some(index) => {
                self.columns.remove(index);
                true
            }
            None => false,
        }
    }

    /// The column names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.columns.iter().map(|(name, _)| name.0.as_ref())
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(column, _)| column.0 == name)
    }

    fn write(&self, out: &mut String) {
        out.push('{');
        for (index, (name, value)) in self.columns.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            name.write(out);
            out.push(':');
            out.push_str(value.get());
        }
        out.push('}');
    }
}

/// The rows of a batch's JSON text (the `rows` of a [`crate::RawBatch`]), borrowed from it.
pub fn parse(rows: &str) -> Result<Vec<RawChange<'_>>> {
    serde_json::from_str(rows).map_err(|err| Error::fatal(format!("rows are not valid: {err}")))
}

/// The JSON array text a transform returns: each change as `{"op": …, "row": {…}}`.
pub fn to_json(changes: &[RawChange<'_>]) -> String {
    let mut out = String::with_capacity(changes.len() * 128 + 2);
    out.push('[');
    for (index, change) in changes.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(match change.op {
            Op::Upsert => "{\"op\":\"upsert\",\"row\":",
            Op::Delete => "{\"op\":\"delete\",\"row\":",
        });
        change.row.write(&mut out);
        out.push('}');
    }
    out.push(']');
    out
}

/// A string from the batch: borrowed when its JSON text had no escape sequence, which also
/// means that text can be written back between quotes as it is.
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl Text<'_> {
    fn write(&self, out: &mut String) {
        match &self.0 {
            Cow::Borrowed(text) => {
                out.push('"');
                out.push_str(text);
                out.push('"');
            }
            // A name the transform set (`masked`), on every row: written between quotes as
            // it is unless it needs escapes, without a string of its own per row.
            Cow::Owned(text) if !text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) => {
                out.push('"');
                out.push_str(text);
                out.push('"');
            }
            Cow::Owned(text) => {
                // A String serializes infallibly.
                out.push_str(&serde_json::to_string(text).unwrap_or_default());
            }
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawRow<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = RawRow<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a row (a JSON object)")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut columns = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((name, value)) = map.next_entry::<Text<'de>, &'de RawValue>()? {
                    columns.push((name, Cow::Borrowed(value)));
                }
                Ok(RawRow { columns })
            }
        }
        deserializer.deserialize_map(RowVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untouched_values_come_out_as_they_came_in() {
        let text = r#"[{"op":"upsert","row":{"id":1,"a\"b":"x\ny","n":1.50,"j":{"k":[1, 2]}}},
                       {"op":"delete","row":{"id":2}}]"#;
        let mut changes = parse(text).unwrap();
        assert!(changes[1].is_delete());
        assert_eq!(changes[0].row.get_str("a\"b").as_deref(), Some("x\ny"));
        assert_eq!(changes[0].row.get_as::<f64>("n").unwrap(), Some(1.5));
        changes[0].row.set("id", &"one").unwrap();
        changes[0].row.set("masked", &true).unwrap();
        assert!(changes[1].row.remove("id"));
        assert_eq!(
            to_json(&changes),
            r#"[{"op":"upsert","row":{"id":"one","a\"b":"x\ny","n":1.50,"j":{"k":[1, 2]},"masked":true}},{"op":"delete","row":{}}]"#
        );
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let changes = parse(r#"[{"op":"upsert","row":{"e":"a@b"}}]"#).unwrap();
        assert!(matches!(
            changes[0].row.get_str("e"),
            Some(Cow::Borrowed("a@b"))
        ));
        assert_eq!(changes[0].row.get_str("missing"), None);
        assert!(parse(r#"[{"op":"upsert","row":[1]}]"#).is_err());
    }
}
