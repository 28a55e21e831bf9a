//! The engine's vocabulary: rows, positions, batches, what a delivery left behind and what a
//! module call used, and the one rule for a row's text (one line of JSON). Beside them, the
//! leaf words every layer speaks: the typed error, deterministic ids, a row's key, values as
//! JSON, the stop request, the doubling back-off, failpoints, URLs with their passwords
//! masked, and the one setting every SQLite connection of the process is opened with. Every
//! other layer
//! speaks these types; this folder imports nothing from outside itself, so it can never be
//! part of an import circle.

use std::fmt;
use std::time::Duration;

pub mod backoff;
pub mod error;
pub mod failpoint;
pub mod ids;
pub mod json;
pub mod key;
pub mod redact;
pub mod rejections;
mod scan;
pub mod shutdown;
pub mod sqlite_quotes;

/// Whether a row is delivered as a change or as a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Upsert,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }
}

/// The rows of one page, each rendered as a JSON object, in read order.
///
/// Rows share one buffer so that a page costs a handful of allocations whatever its size.
#[derive(Debug, Default, Clone)]
pub struct Rows {
    data: Vec<u8>,
    ends: Vec<(Op, usize)>,
}

impl Rows {
    pub fn with_capacity(rows: usize) -> Self {
        Rows {
            data: Vec::with_capacity(rows * 128),
            ends: Vec::with_capacity(rows),
        }
    }

    /// The buffer the next row's JSON object is written into; finish it with [`Rows::end_row`].
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    pub fn end_row(&mut self, op: Op) {
        self.ends.push((op, self.data.len()));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each row's operation and JSON object.
    pub fn iter(&self) -> impl Iterator<Item = (Op, &[u8])> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&(op, end)| {
            let row = &self.data[start..end];
            start = end;
            (op, row)
        })
    }

    pub fn deletes(&self) -> usize {
        self.ends.iter().filter(|(op, _)| *op == Op::Delete).count()
    }

    /// The rows as a JSON array of `{"op": …, "row": …}` objects, as modules receive them.
    pub fn to_json_array(&self) -> String {
        let mut json = Vec::with_capacity(self.data.len() + self.len() * 24 + 2);
        json.push(b'[');
        for (index, (op, row)) in self.iter().enumerate() {
            if index > 0 {
                json.push(b',');
            }
            json.extend_from_slice(b"{\"op\":\"");
            json.extend_from_slice(op.as_str().as_bytes());
            json.extend_from_slice(b"\",\"row\":");
            json.extend_from_slice(row);
            json.push(b'}');
        }
        json.push(b']');
        // Rows are written as JSON, which is UTF-8; a lossy conversion never changes them.
        String::from_utf8(json).unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into())
    }

    /// The rows at `indexes`, in that order.
    pub fn select(&self, indexes: &[u32]) -> Rows {
        let spans: Vec<(Op, usize, usize)> = {
            let mut start = 0;
            self.ends
                .iter()
                .map(|&(op, end)| {
                    let span = (op, start, end);
                    start = end;
                    span
                })
                .collect()
        };
        let mut rows = Rows::with_capacity(indexes.len());
        for &index in indexes {
            if let Some(&(op, start, end)) = spans.get(index as usize) {
                rows.data.extend_from_slice(&self.data[start..end]);
                rows.end_row(op);
            }
        }
        rows
    }

    /// Row `index` as an `{"op": …, "row": …}` element, the form a dead letter keeps.
    pub fn element(&self, index: usize) -> Option<String> {
        let (op, row) = self.iter().nth(index)?;
        Some(format!(
            "{{\"op\":\"{}\",\"row\":{}}}",
            op.as_str(),
            String::from_utf8_lossy(row)
        ))
    }

    /// Reads rows back from the form of [`Rows::to_json_array`], checking each element: in
    /// one pass when the text is in the plain form modules write (`scan`), else by serde_json.
    pub fn from_json_array(text: &str) -> Result<Self, String> {
        let mut rows = Rows {
            data: Vec::with_capacity(text.len()),
            ends: Vec::new(),
        };
        match scan::plain_rows(text.as_bytes(), &mut rows.data, &mut rows.ends) {
            true => Ok(rows),
            false => Self::general_from_json_array(text),
        }
    }

    /// [`Rows::from_json_array`] for any text serde_json reads, with its words for what is wrong.
    fn general_from_json_array(text: &str) -> Result<Self, String> {
        let elements: Vec<&serde_json::value::RawValue> =
            serde_json::from_str(text).map_err(|err| err.to_string())?;
        let mut rows = Rows::with_capacity(elements.len());
        for (index, element) in elements.into_iter().enumerate() {
            rows.push_element(element.get())
                .map_err(|detail| format!("element {index}: {detail}"))?;
        }
        Ok(rows)
    }

    /// Appends one `{"op": …, "row": {…}}` element, checking it.
    ///
    /// The row is kept minified: a module may return it pretty-printed, and each row must
    /// stay one line of JSON Lines (see [`crate::model::json::write_raw`]).
    pub fn push_element(&mut self, element: &str) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum WireOp {
            Upsert,
            Delete,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Envelope<'a> {
            op: WireOp,
            #[serde(borrow)]
            row: &'a serde_json::value::RawValue,
        }
        let envelope: Envelope<'_> =
            serde_json::from_str(element).map_err(|err| err.to_string())?;
        let row = envelope.row.get();
        if !row.starts_with('{') {
            return Err("\"row\" is not an object".to_owned());
        }
        // serde_json checked the value, so minifying cannot fail; were it to, the row is
        // refused rather than written across lines.
        if !push_minified(&mut self.data, row.as_bytes()) {
            return Err("\"row\" is not one JSON object".to_owned());
        }
        self.end_row(match envelope.op {
            WireOp::Upsert => Op::Upsert,
            WireOp::Delete => Op::Delete,
        });
        Ok(())
    }
}

/// Appends `json` without the whitespace between its tokens, in one pass that copies runs of
/// bytes, and says whether it was one self-contained value: brackets balanced, strings
/// closed, no control character, no `,` or `:` outside every bracket. Nothing is appended
/// when it was not. This is not a validator (`1 2` passes as `12`); it only guarantees that
/// what it appends is one line that cannot close the object it is placed in.
pub fn push_minified(buf: &mut Vec<u8>, json: &[u8]) -> bool {
    let start = buf.len();
    buf.reserve(json.len());
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut tokens = false;
    // Bytes from `run` up to the current one are kept; whitespace flushes the run.
    let mut run = 0;
    let mut sound = true;
    for (index, &byte) in json.iter().enumerate() {
        if byte < 0x20 && (in_string || !matches!(byte, b'\t' | b'\n' | b'\r')) {
            sound = false;
            break;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' => {
                buf.extend_from_slice(&json[run..index]);
                run = index + 1;
                continue;
            }
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => {
                sound = false;
                break;
            }
            b'}' | b']' => depth -= 1,
            b',' | b':' if depth == 0 => {
                sound = false;
                break;
            }
            _ => {}
        }
        tokens = true;
    }
    if !sound || in_string || depth != 0 || !tokens {
        buf.truncate(start);
        return false;
    }
    buf.extend_from_slice(&json[run..]);
    true
}

/// Where a pipeline stands: which rows were already delivered.
///
/// Rows are read in `(cursor, key)` order. With `--null-cursor oldest` the rows whose cursor is
/// NULL come first, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Among the rows whose cursor is NULL, after the given key (or at their start).
    Nulls { after_key: Option<String> },
    /// At the first row with a non-NULL cursor.
    Start,
    /// After the row with this exact cursor and key.
    After(Watermark),
}

/// A `(cursor, key)` pair, each in the exact text form its driver writes and reads back
/// without loss (microseconds and all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    pub cursor: String,
    pub key: String,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Nulls { after_key: None } => f.write_str("start of NULL cursors"),
            Position::Nulls {
                after_key: Some(key),
            } => write!(f, "(NULL, {key})"),
            Position::Start => f.write_str("start"),
            Position::After(mark) => write!(f, "({}, {})", mark.cursor, mark.key),
        }
    }
}

/// What to do with rows whose cursor is NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum NullCursorPolicy {
    /// Refuse to run while any row has a NULL cursor: it would be passed over silently.
    Refuse,
    /// Deliver those rows first, in key order, on a full sync.
    Oldest,
}

impl NullCursorPolicy {
    /// Where a new pipeline starts under this policy.
    pub fn initial_position(self) -> Position {
        match self {
            NullCursorPolicy::Oldest => Position::Nulls { after_key: None },
            NullCursorPolicy::Refuse => Position::Start,
        }
    }
}

/// One batch as it is handed on.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Deterministic: the same pipeline and cursor range give the same id.
    pub id: &'a str,
    pub pipeline: &'a str,
    pub rows: &'a Rows,
}

/// What became of a batch that was handed on: every row not listed here was delivered.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Rows a module answered it would not take.
    pub rejected: Vec<RejectedRow>,
    /// Rows a module failed on alone, every time (poison): set aside so that the rest goes on.
    pub parked: Vec<RejectedRow>,
    /// Rows the end of the chain took: written as lines, or taken by the destination (its
    /// rejections not counted). Fewer than the batch's rows when a transform dropped some.
    pub passed_on: usize,
}

impl Delivered {
    /// Adds what another part of the same batch left behind.
    pub fn merge(&mut self, other: Delivered) {
        self.rejected.extend(other.rejected);
        self.parked.extend(other.parked);
        self.passed_on += other.passed_on;
    }

    /// Every row left behind, rejected or parked.
    pub fn letters(&self) -> impl Iterator<Item = &RejectedRow> + '_ {
        self.rejected.iter().chain(&self.parked)
    }
}

/// A row that was not taken, as the module that refused it received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRow {
    /// Position in the batch the module received.
    pub index: u32,
    /// The `{"op", "row"}` element, as JSON text.
    pub row: String,
    pub reason: String,
    /// The name of the module that refused the row; a replay starts at that module's stage
    /// of the chain (the state store keeps the name in its `stage` column).
    pub module: String,
    /// The id of the batch `index` counts in, when it is not the batch handed on (a part of
    /// it that was split off to find a bad row).
    pub batch: Option<String>,
}

/// What module calls used: one call's, a chain's, or a pipeline's over its life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Wall-clock time inside module calls.
    pub time: Duration,
    /// Fuel burned; 0 when fuel is not metered.
    pub fuel: u64,
    /// The largest linear memory any one instance reached.
    pub peak_memory: u64,
}

impl Usage {
    /// Adds `other`: times and fuel add up, the peak is the larger one.
    pub fn add(&mut self, other: Usage) {
        self.time += other.time;
        self.fuel = self.fuel.saturating_add(other.fuel);
        self.peak_memory = self.peak_memory.max(other.peak_memory);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_the_module_form() {
        let mut rows = Rows::default();
        rows.buffer().extend_from_slice(br#"{"id":1}"#);
        rows.end_row(Op::Upsert);
        rows.buffer().extend_from_slice(br#"{"id":2,"s":"]}"}"#);
        rows.end_row(Op::Delete);
        let json = rows.to_json_array();
        assert_eq!(
            json,
            r#"[{"op":"upsert","row":{"id":1}},{"op":"delete","row":{"id":2,"s":"]}"}}]"#
        );
        let back = Rows::from_json_array(&json).unwrap();
        let items: Vec<(Op, &[u8])> = back.iter().collect();
        assert_eq!(items, rows.iter().collect::<Vec<_>>());
        assert!(Rows::from_json_array(r#"[{"op":"upsert","row":3}]"#).is_err());
        assert!(Rows::from_json_array(r#"[{"op":"merge","row":{}}]"#).is_err());
        assert!(Rows::from_json_array(r#"{"op":"upsert"}"#).is_err());
        assert!(Rows::from_json_array(r#"[{"op":"upsert","row":{},"x":1}]"#).is_err());
        assert_eq!(Rows::from_json_array("[]").unwrap().len(), 0);
    }

    #[test]
    fn pretty_printed_rows_from_a_module_become_one_line_each() {
        let pretty = "[\n  {\n    \"op\": \"upsert\",\n    \"row\": {\n      \"id\": 1,\n      \"note\": \"a b\\n\",\n      \"tags\": [\n        \"x\"\n      ]\n    }\n  }\n]\n";
        let rows = Rows::from_json_array(pretty).unwrap();
        let items: Vec<(Op, &[u8])> = rows.iter().collect();
        assert_eq!(
            items,
            vec![(Op::Upsert, &br#"{"id":1,"note":"a b\n","tags":["x"]}"#[..])]
        );
    }

    #[test]
    fn usage_adds_times_and_fuel_and_keeps_the_peak() {
        let mut total = Usage::default();
        total.add(Usage {
            time: Duration::from_millis(5),
            fuel: 10,
            peak_memory: 100,
        });
        total.add(Usage {
            time: Duration::from_millis(7),
            fuel: 1,
            peak_memory: 50,
        });
        assert_eq!(
            total,
            Usage {
                time: Duration::from_millis(12),
                fuel: 11,
                peak_memory: 100
            }
        );
    }
}
