//! Dead letters: rows a module rejected or failed on alone (parked), kept until `host retry`
//! delivers them.
//!
//! One letter per (pipeline, batch, row), so that a batch delivered twice (redelivered after
//! a crash) records its letters once, with the attempts counted. A letter keeps the module
//! that left it behind (a replay starts there) and, where the row shows them, its key and
//! cursor: a newer version of the row that comes through later supersedes the letter, and a
//! replay skips it rather than put the older version over the newer.

use std::collections::HashSet;

use sqlx::any::AnyRow;

use super::{column, now_rfc3339, StateStore};
use crate::model::error::{Error, Result};
use crate::model::RejectedRow;

/// A row a module rejected or parked, kept until it is delivered by `host retry`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub pipeline: String,
    pub batch_id: String,
    pub index: i64,
    /// The `{"op", "row"}` element as the module received it.
    pub row: Box<serde_json::value::RawValue>,
    pub reason: String,
    pub attempts: i64,
    pub first_failed_at: String,
    pub last_failed_at: String,
    /// The module that rejected or parked the row; `None` for letters kept before letters
    /// named it (those are the destination's).
    pub stage: Option<String>,
    /// Whether the module failed on the row (parked) rather than answered that it rejects it.
    pub parked: bool,
    /// The row's key and cursor values as JSON text, when the row shows its key column.
    pub key: Option<String>,
    pub cursor: Option<String>,
    /// When a newer version of the row came through, and its cursor.
    pub superseded_at: Option<String>,
    pub superseded_cursor: Option<String>,
}

/// A letter to keep: the row, whether it was parked, and its key and cursor when known.
#[derive(Debug, Clone, Copy)]
pub struct NewLetter<'a> {
    pub row: &'a RejectedRow,
    pub parked: bool,
    pub key: Option<&'a str>,
    pub cursor: Option<&'a str>,
}

/// Parameters per letter in one statement.
const PARAMS: usize = 9;

impl StateStore {
    /// Keeps the letters of batch `batch_id` (a letter whose row names another batch, a part
    /// split off it, is kept under that one). Recording the same letter again (the batch was
    /// delivered again) counts an attempt.
    ///
    /// Written `CHUNK` rows to a statement, each statement its own transaction, so that a
    /// batch with thousands of letters never holds the store (one connection for SQLite)
    /// for long: other pipelines' checkpoints go in between. A crash between chunks is safe:
    /// the batch is delivered again and its letters recorded again, as attempts.
    ///
    /// `fence`, the lease token of a pipeline run by a worker, refuses the letters once
    /// another worker took the pipeline over (see `leases`).
    pub async fn record_letters(
        &self,
        pipeline: &str,
        batch_id: &str,
        fence: Option<i64>,
        letters: &[NewLetter<'_>],
    ) -> Result<()> {
        let now = now_rfc3339();
        for chunk in chunks(batch_id, letters) {
            self.record_chunk(pipeline, batch_id, fence, &now, &chunk)
                .await?;
        }
        Ok(())
    }

    async fn record_chunk(
        &self,
        pipeline: &str,
        batch_id: &str,
        fence: Option<i64>,
        now: &str,
        letters: &[&NewLetter<'_>],
    ) -> Result<()> {
        // $1 pipeline, $2 time, then PARAMS values for each letter.
        let values: Vec<String> = (0..letters.len())
            .map(|n| {
                let at = |offset: usize| format!("${}", 3 + PARAMS * n + offset);
                let params: Vec<String> = (0..PARAMS).map(at).collect();
                format!("($1, {}, $2, $2)", params.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO {p}dead_letters AS d (pipeline, batch_id, row_index, row_json, reason, \
             stage, parked, row_key, row_cursor, superseded_at, first_failed_at, last_failed_at) \
             VALUES {values} \
             ON CONFLICT (pipeline, batch_id, row_index) DO UPDATE SET \
             reason = excluded.reason, last_failed_at = excluded.last_failed_at, \
             attempts = d.attempts + 1",
            p = self.prefix,
            values = values.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(pipeline).bind(now);
        for letter in letters {
            let row = letter.row;
            query = query
                .bind(row.batch.as_deref().unwrap_or(batch_id))
                .bind(i64::from(row.index))
                .bind(&row.row)
                .bind(&row.reason)
                .bind(Some(row.module.as_str()).filter(|module| !module.is_empty()))
                .bind(i64::from(letter.parked))
                .bind(letter.key)
                .bind(letter.cursor)
                .bind(None::<&str>);
        }
        self.execute_fenced(pipeline, fence, query, "record rejected rows of")
            .await?;
        Ok(())
    }

    /// The dead letters of `pipeline`, oldest first; at most `limit` of those with an id
    /// above `after`.
    pub async fn dead_letters(
        &self,
        pipeline: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(&format!(
            "SELECT id, pipeline, batch_id, row_index, row_json, reason, attempts, \
             first_failed_at, last_failed_at, stage, parked, row_key, row_cursor, \
             superseded_at, superseded_cursor FROM {}dead_letters \
             WHERE pipeline = $1 AND id > $2 ORDER BY id LIMIT $3",
            self.prefix
        ))
        .bind(pipeline)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|err| Error::database(format!("cannot read dead letters of {pipeline:?}"), err))?;
        rows.iter().map(decode).collect()
    }

    /// The keys of the letters of `pipeline` that no newer version has superseded yet.
    pub async fn live_letter_keys(&self, pipeline: &str) -> Result<HashSet<String>> {
        let keys: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT DISTINCT row_key FROM {}dead_letters \
             WHERE pipeline = $1 AND row_key IS NOT NULL AND superseded_at IS NULL",
            self.prefix
        ))
        .bind(pipeline)
        .fetch_all(&self.pool)
        .await
        .map_err(|err| Error::database(format!("cannot read dead letters of {pipeline:?}"), err))?;
        Ok(keys.into_iter().collect())
    }

    /// Marks the live letters of `pipeline` for row `key` as superseded by its version at
    /// `cursor`, which came through later; a letter of that very version (the same batch
    /// delivered again) stays. Returns how many letters it marked.
    pub async fn supersede(&self, pipeline: &str, key: &str, cursor: Option<&str>) -> Result<u64> {
        let result = sqlx::query(&format!(
            "UPDATE {}dead_letters SET superseded_at = $4, superseded_cursor = $3 \
             WHERE pipeline = $1 AND row_key = $2 AND superseded_at IS NULL \
             AND (row_cursor IS NULL OR $3 IS NULL OR row_cursor <> $3)",
            self.prefix
        ))
        .bind(pipeline)
        .bind(key)
        .bind(cursor)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await
        .map_err(|err| {
            Error::database(format!("cannot update dead letters of {pipeline:?}"), err)
        })?;
        Ok(result.rows_affected())
    }

    /// Drops a dead letter that was delivered.
    pub async fn remove_dead_letter(&self, id: i64) -> Result<()> {
        sqlx::query(&format!(
            "DELETE FROM {}dead_letters WHERE id = $1",
            self.prefix
        ))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|err| Error::database("cannot remove a delivered dead letter", err))?;
        Ok(())
    }

    /// Counts another failed attempt of a dead letter, with the module's new reason.
    pub async fn reject_again(&self, id: i64, reason: &str) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE {}dead_letters SET reason = $2, last_failed_at = $3, \
             attempts = attempts + 1 WHERE id = $1",
            self.prefix
        ))
        .bind(id)
        .bind(reason)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await
        .map_err(|err| Error::database("cannot update a dead letter", err))?;
        Ok(())
    }
}

/// Letters written by one statement: [`PARAMS`] parameters each, far below every database's
/// limit on parameters.
pub const CHUNK: usize = 500;

/// `letters` in statements of at most [`CHUNK`] rows. A row left twice in one answer keeps
/// its last reason: one statement cannot update the same letter twice.
fn chunks<'l, 'a>(batch_id: &str, letters: &'l [NewLetter<'a>]) -> Vec<Vec<&'l NewLetter<'a>>> {
    let place = |letter: &NewLetter<'_>| {
        (
            letter
                .row
                .batch
                .clone()
                .unwrap_or_else(|| batch_id.to_owned()),
            letter.row.index,
        )
    };
    let mut last = std::collections::HashMap::with_capacity(letters.len());
    for (position, letter) in letters.iter().enumerate() {
        last.insert(place(letter), position);
    }
    let unique: Vec<&NewLetter<'_>> = letters
        .iter()
        .enumerate()
        .filter(|(position, letter)| last.get(&place(letter)) == Some(position))
        .map(|(_, letter)| letter)
        .collect();
    unique.chunks(CHUNK).map(<[_]>::to_vec).collect()
}

fn decode(row: &AnyRow) -> Result<DeadLetter> {
    let row_json: String = column(row, "row_json")?;
    Ok(DeadLetter {
        id: column(row, "id")?,
        pipeline: column(row, "pipeline")?,
        batch_id: column(row, "batch_id")?,
        index: column(row, "row_index")?,
        row: serde_json::value::RawValue::from_string(row_json)
            .map_err(|err| Error::fatal(format!("a dead letter holds a damaged row: {err}")))?,
        reason: column(row, "reason")?,
        attempts: column(row, "attempts")?,
        first_failed_at: column(row, "first_failed_at")?,
        last_failed_at: column(row, "last_failed_at")?,
        stage: column(row, "stage")?,
        parked: column::<i64>(row, "parked")? != 0,
        key: column(row, "row_key")?,
        cursor: column(row, "row_cursor")?,
        superseded_at: column(row, "superseded_at")?,
        superseded_cursor: column(row, "superseded_cursor")?,
    })
}

#[cfg(test)]
impl StateStore {
    /// Keeps rows a destination rejected, with no key: the letters of the tests that need no
    /// more.
    pub async fn record_rejections(
        &self,
        pipeline: &str,
        batch_id: &str,
        rejected: &[RejectedRow],
    ) -> Result<()> {
        self.record_letters(pipeline, batch_id, None, &unkeyed(rejected))
            .await
    }
}

/// `rejected` as letters with no key.
#[cfg(test)]
fn unkeyed(rejected: &[RejectedRow]) -> Vec<NewLetter<'_>> {
    rejected
        .iter()
        .map(|row| NewLetter {
            row,
            parked: false,
            key: None,
            cursor: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::model::RejectedRow;
    use crate::state::testing::{users, TempDir};

    fn rejected(index: u32, reason: &str) -> RejectedRow {
        RejectedRow {
            index,
            row: format!(r#"{{"op":"upsert","row":{{"id":{index}}}}}"#),
            reason: reason.into(),
            module: "webhook".into(),
            batch: None,
        }
    }

    #[tokio::test]
    async fn a_rejection_is_kept_once_with_its_attempts_counted() {
        let dir = TempDir::new();
        let store = dir.open().await;
        users(&store).await;
        store
            .record_rejections(
                "users",
                "b1",
                &[rejected(0, "bad email"), rejected(2, "too long")],
            )
            .await
            .unwrap();
        // The same batch delivered again after a crash: same rows, a new reason for one.
        store
            .record_rejections("users", "b1", &[rejected(0, "still bad")])
            .await
            .unwrap();
        // Another batch's row 0 is another letter.
        store
            .record_rejections("users", "b2", &[rejected(0, "bad email")])
            .await
            .unwrap();

        let letters = store.dead_letters("users", 0, 100).await.unwrap();
        let seen: Vec<(&str, i64, &str, i64)> = letters
            .iter()
            .map(|l| (l.batch_id.as_str(), l.index, l.reason.as_str(), l.attempts))
            .collect();
        assert_eq!(
            seen,
            [
                ("b1", 0, "still bad", 2),
                ("b1", 2, "too long", 1),
                ("b2", 0, "bad email", 1)
            ]
        );
        assert_eq!(letters[0].row.get(), r#"{"op":"upsert","row":{"id":0}}"#);
        let state = store.load("users").await.unwrap().unwrap();
        assert_eq!(state.accounting.dead_letters, 3);

        // Paging, another failure, and removal after delivery.
        let rest = store.dead_letters("users", letters[0].id, 1).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].id, letters[1].id);
        store.reject_again(letters[1].id, "worse").await.unwrap();
        store.remove_dead_letter(letters[0].id).await.unwrap();
        let left = store.dead_letters("users", 0, 100).await.unwrap();
        assert_eq!(left.len(), 2);
        assert_eq!((left[0].reason.as_str(), left[0].attempts), ("worse", 2));
        assert!(store
            .dead_letters("orders", 0, 100)
            .await
            .unwrap()
            .is_empty());
    }

    #[test]
    fn rejections_are_written_in_bounded_chunks_each_row_once() {
        let mut many: Vec<RejectedRow> = (0..1_201).map(|i| rejected(i, "no")).collect();
        many.push(rejected(7, "last word"));
        let letters = super::unkeyed(&many);
        let chunks = super::chunks("b1", &letters);
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [super::CHUNK, super::CHUNK, 201]);
        let sevens: Vec<&str> = chunks
            .iter()
            .flatten()
            .filter(|letter| letter.row.index == 7)
            .map(|letter| letter.row.reason.as_str())
            .collect();
        assert_eq!(sevens, ["last word"]);
    }

    #[tokio::test]
    async fn thousands_of_rejections_are_kept_across_chunks() {
        let dir = TempDir::new();
        let store = dir.open().await;
        users(&store).await;
        let reason = "x".repeat(1024);
        let many: Vec<RejectedRow> = (0..5_000).map(|i| rejected(i, &reason)).collect();
        store.record_rejections("users", "b1", &many).await.unwrap();
        // Again, as after a crash: one more attempt each, no new letters.
        store.record_rejections("users", "b1", &many).await.unwrap();
        let letters = store.dead_letters("users", 0, 10_000).await.unwrap();
        assert_eq!(letters.len(), 5_000);
        assert!(letters
            .iter()
            .enumerate()
            .all(|(i, l)| l.index == i as i64 && l.attempts == 2 && l.reason == reason));
        assert_eq!(
            letters[4_999].row.get(),
            r#"{"op":"upsert","row":{"id":4999}}"#
        );
    }
}
