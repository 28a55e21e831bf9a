//! The host's JSON Lines output, parsed, and the assertions every scenario makes on it.

use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::Deserialize;
use serde_json::{Map, Value};

/// One delivered row: `{"batch": "...", "op": "upsert"|"delete", "row": {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Line {
    pub batch: String,
    pub op: String,
    pub row: Map<String, Value>,
}

impl Line {
    /// The row's `id` column, which every test table has as an integer.
    pub fn id(&self) -> i64 {
        match self.row.get("id").and_then(Value::as_i64) {
            Some(id) => id,
            None => panic!("line without an integer \"id\": {self:?}"),
        }
    }

    /// A text (or timestamp) column; `None` for JSON null.
    pub fn text(&self, column: &str) -> Option<&str> {
        match self.row.get(column) {
            Some(Value::String(text)) => Some(text),
            Some(Value::Null) => None,
            other => panic!("column {column:?} is {other:?}, not a string or null, in {self:?}"),
        }
    }

    pub fn name(&self) -> &str {
        self.text("name")
            .unwrap_or_else(|| panic!("null name in {self:?}"))
    }

    pub fn updated_at(&self) -> Option<&str> {
        self.text("updated_at")
    }
}

pub fn parse_lines(text: &str) -> Vec<Line> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(n, line)| match serde_json::from_str::<Line>(line) {
            Ok(parsed) => parsed,
            Err(err) => panic!("output line {} is not a delivery ({err}): {line}", n + 1),
        })
        .collect()
}

pub fn ids(lines: &[Line]) -> Vec<i64> {
    lines.iter().map(Line::id).collect()
}

/// Consecutive runs of lines that share a batch id, as `(batch, ids)`.
pub fn batches(lines: &[Line]) -> Vec<(String, Vec<i64>)> {
    let mut out: Vec<(String, Vec<i64>)> = Vec::new();
    for line in lines {
        match out.last_mut() {
            Some((batch, ids)) if *batch == line.batch => ids.push(line.id()),
            _ => out.push((line.batch.clone(), vec![line.id()])),
        }
    }
    out
}

/// How many times each id was delivered.
pub fn counts(lines: &[Line]) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for line in lines {
        *counts.entry(line.id()).or_insert(0) += 1;
    }
    counts
}

/// Every id of `expected` delivered exactly once, and nothing else.
pub fn assert_each_once(lines: &[Line], expected: impl IntoIterator<Item = i64>) {
    let counts = counts(lines);
    let expected: std::collections::BTreeSet<i64> = expected.into_iter().collect();
    let missing: Vec<i64> = expected
        .iter()
        .filter(|id| !counts.contains_key(id))
        .copied()
        .collect();
    let repeated: Vec<(i64, usize)> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (*id, *n))
        .collect();
    let unexpected: Vec<i64> = counts
        .keys()
        .filter(|id| !expected.contains(id))
        .copied()
        .collect();
    assert!(
        missing.is_empty() && repeated.is_empty() && unexpected.is_empty(),
        "expected each of {} rows exactly once in {} lines; missing {}: {:?}; delivered more \
         than once {}: {:?}; not expected {}: {:?}",
        expected.len(),
        lines.len(),
        missing.len(),
        head(&missing),
        repeated.len(),
        head(&repeated),
        unexpected.len(),
        head(&unexpected),
    );
}

/// Every id of `expected` delivered at least once, and nothing else.
pub fn assert_each_at_least_once(lines: &[Line], expected: impl IntoIterator<Item = i64>) {
    let counts = counts(lines);
    let expected: std::collections::BTreeSet<i64> = expected.into_iter().collect();
    let missing: Vec<i64> = expected
        .iter()
        .filter(|id| !counts.contains_key(id))
        .copied()
        .collect();
    let unexpected: Vec<i64> = counts
        .keys()
        .filter(|id| !expected.contains(id))
        .copied()
        .collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "expected each of {} rows at least once in {} lines; missing {}: {:?}; not expected \
         {}: {:?}",
        expected.len(),
        lines.len(),
        missing.len(),
        head(&missing),
        unexpected.len(),
        head(&unexpected),
    );
}

/// Batches hold at most `size` lines and no batch id comes back after another batch.
pub fn assert_batches_at_most(lines: &[Line], size: usize) {
    let batches = batches(lines);
    for (batch, ids) in &batches {
        assert!(
            ids.len() <= size,
            "batch {batch} has {} rows, more than --batch-size {size}: {ids:?}",
            ids.len()
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (batch, _) in &batches {
        assert!(
            seen.insert(batch.clone()),
            "batch id {batch} appears in two separate places of one run's output"
        );
    }
}

pub fn head<T: Debug + Clone>(items: &[T]) -> Vec<T> {
    items.iter().take(20).cloned().collect()
}

/// Lines in strictly increasing `(cursor, key)` order, NULL cursors first; the cursor is the
/// `updated_at` text, whose fixed-width rendering sorts as the times do.
pub fn assert_in_cursor_order(lines: &[Line]) {
    for pair in lines.windows(2) {
        let before = (pair[0].updated_at(), pair[0].id());
        let after = (pair[1].updated_at(), pair[1].id());
        assert!(
            before < after,
            "lines out of (cursor, key) order: {before:?} then {after:?}"
        );
    }
}
