//! Deterministic ids: the same input always gets the same id, so that a destination can send
//! an id as an idempotency key and drop what it has already seen. Every id a batch is handed
//! on under is made here: a batch of rows (a cursor range), a delete batch (a set of keys), a
//! batch of dead letters sent again, and a part of a batch split off to find a bad row.

use sha2::{Digest, Sha256};

use crate::model::key::Key;
use crate::model::Position;

/// 32 hex digits from the SHA-256 of `parts`, each ended by a NUL so that no two lists of
/// parts run together into the same text.
pub fn digest<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

/// The id of the batch of `pipeline` that starts after `start` and ends at `end`: the same
/// range always gets the same id, so a destination can drop a batch it has seen.
pub fn batch_id(pipeline: &str, start: &Position, end: &Position) -> String {
    digest([pipeline, &describe(start), &describe(end)])
}

/// The id of the delete batch of `keys` (sorted): the same keys always get the same id, and
/// never the id of a batch of rows (those hash a range of positions).
pub fn delete_batch_id(pipeline: &str, keys: &[Key]) -> String {
    let keys: Vec<&str> = keys.iter().map(Key::json).collect();
    digest([pipeline, "deletes", &keys.join("\0")])
}

/// The id of a batch of dead letters sent again: the same letters always get the same id.
pub fn retry_batch_id(pipeline: &str, dead_letters: &[i64]) -> String {
    let ids: Vec<String> = dead_letters.iter().map(i64::to_string).collect();
    digest([pipeline, "retry", &ids.join(",")])
}

/// The id of the part of batch `batch` (as stage `stage` received it) that holds the rows at
/// `indexes`.
pub fn part_id(batch: &str, stage: usize, indexes: &[u32]) -> String {
    let stage = stage.to_string();
    let rows = ranges(indexes);
    digest([batch, "part", &stage, &rows])
}

fn describe(position: &Position) -> String {
    match position {
        Position::Nulls { after_key } => format!("nulls\0{}", after_key.as_deref().unwrap_or("")),
        Position::Start => "start".to_owned(),
        Position::After(mark) => format!("after\0{}\0{}", mark.cursor, mark.key),
    }
}

/// `indexes` as runs: `0-4,7,9-10`.
fn ranges(indexes: &[u32]) -> String {
    let mut text = String::new();
    let mut rest = indexes.iter().copied().peekable();
    while let Some(first) = rest.next() {
        let mut last = first;
        while rest.peek() == Some(&(last + 1)) {
            last += 1;
            rest.next();
        }
        if !text.is_empty() {
            text.push(',');
        }
        text.push_str(&first.to_string());
        if last != first {
            text.push('-');
            text.push_str(&last.to_string());
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Watermark;

    fn after(cursor: &str, key: &str) -> Position {
        Position::After(Watermark {
            cursor: cursor.into(),
            key: key.into(),
        })
    }

    #[test]
    fn batch_ids_depend_only_on_pipeline_and_range() {
        let a = batch_id(
            "users",
            &Position::Start,
            &after("2024-01-01T00:00:00.000001Z", "7"),
        );
        let b = batch_id(
            "users",
            &Position::Start,
            &after("2024-01-01T00:00:00.000001Z", "7"),
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
        assert_ne!(
            a,
            batch_id(
                "orders",
                &Position::Start,
                &after("2024-01-01T00:00:00.000001Z", "7")
            )
        );
        assert_ne!(
            a,
            batch_id(
                "users",
                &Position::Start,
                &after("2024-01-01T00:00:00.000002Z", "7")
            )
        );
        assert_ne!(
            batch_id("users", &after("a", "b"), &after("c", "d")),
            batch_id("users", &after("a\0b", ""), &after("c", "d"))
        );
    }

    #[test]
    fn part_ids_depend_on_the_batch_the_stage_and_the_rows() {
        assert_eq!(part_id("b", 0, &[0, 1, 2]), part_id("b", 0, &[0, 1, 2]));
        assert_ne!(part_id("b", 0, &[0, 1, 2]), part_id("b", 1, &[0, 1, 2]));
        assert_ne!(part_id("b", 0, &[0, 1, 2]), part_id("c", 0, &[0, 1, 2]));
        assert_ne!(part_id("b", 0, &[0, 1]), part_id("b", 0, &[0, 1, 2]));
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    }

    /// The ids destinations have already seen: a changed recipe would hand the same batch on
    /// under a new id, and a destination would take it twice. Each was computed before the
    /// recipes moved here, and checked against SHA-256 by hand.
    #[test]
    fn every_kind_of_id_is_the_one_it_always_was() {
        let end = after("2024-01-01T00:00:00.000001Z", "7");
        assert_eq!(
            batch_id("users", &Position::Start, &end),
            "10199afe0e1ec475c7562b0bae801edc"
        );
        let nulls = |key: Option<&str>| Position::Nulls {
            after_key: key.map(str::to_owned),
        };
        assert_eq!(
            batch_id("users", &nulls(None), &nulls(Some("3"))),
            "23e4f2eb177f657e49a060394eebd49b"
        );
        let keys = [Key::from_text("7", true), Key::from_text("a\"b", false)];
        assert_eq!(
            delete_batch_id("p", &keys),
            "b60407a8c73bbb01b36981bd9e3b21ac"
        );
        assert_eq!(
            retry_batch_id("p", &[3, 14, 15]),
            "cb957afd41f5b64d35cadb34dd3c7072"
        );
        assert_eq!(
            part_id("b1", 2, &[0, 1, 2, 5, 7, 8]),
            "7747882cfd907795bcafa2af995c676d"
        );
    }
}
