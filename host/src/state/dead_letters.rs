//! Dead letters: rows a destination rejected, kept until `host retry` delivers them.
//!
//! One letter per (pipeline, batch, row), so that a batch delivered twice (redelivered after
//! a crash) records its rejections once, with the attempts counted.

use sqlx::any::AnyRow;

use super::{column, now_rfc3339, StateStore};
use crate::error::{Error, Result};
use crate::model::RejectedRow;

/// A row a destination rejected, kept until it is delivered by `host retry`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub pipeline: String,
    pub batch_id: String,
    pub index: i64,
    /// The `{"op", "row"}` element as the destination received it.
    pub row: Box<serde_json::value::RawValue>,
    pub reason: String,
    pub attempts: i64,
    pub first_failed_at: String,
    pub last_failed_at: String,
}

impl StateStore {
    /// Keeps the rows of batch `batch_id` that the destination rejected. Recording the same
    /// rejection again (the batch was delivered again) counts an attempt.
    ///
    /// Written `CHUNK` rows to a statement, each statement its own transaction, so that a
    /// batch with thousands of rejections never holds the store (one connection for SQLite)
    /// for long: other pipelines' checkpoints go in between. A crash between chunks is safe:
    /// the batch is delivered again and its rejections recorded again, as attempts.
    pub async fn record_rejections(
        &self,
        pipeline: &str,
        batch_id: &str,
        rejected: &[RejectedRow],
    ) -> Result<()> {
        let now = now_rfc3339();
        for chunk in chunks(rejected) {
            self.record_chunk(pipeline, batch_id, &now, &chunk).await?;
        }
        Ok(())
    }

    async fn record_chunk(
        &self,
        pipeline: &str,
        batch_id: &str,
        now: &str,
        rows: &[&RejectedRow],
    ) -> Result<()> {
        // $1 pipeline, $2 batch, $3 time, then index, row and reason of each row.
        let values: Vec<String> = (0..rows.len())
            .map(|n| {
                let first = 4 + 3 * n;
                format!("($1, $2, ${first}, ${}, ${}, $3, $3)", first + 1, first + 2)
            })
            .collect();
        let sql = format!(
            "INSERT INTO {p}dead_letters AS d (pipeline, batch_id, row_index, row_json, reason, \
             first_failed_at, last_failed_at) VALUES {values} \
             ON CONFLICT (pipeline, batch_id, row_index) DO UPDATE SET \
             reason = excluded.reason, last_failed_at = excluded.last_failed_at, \
             attempts = d.attempts + 1",
            p = self.prefix,
            values = values.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(pipeline).bind(batch_id).bind(now);
        for row in rows {
            query = query
                .bind(i64::from(row.index))
                .bind(&row.row)
                .bind(&row.reason);
        }
        query.execute(&self.pool).await.map_err(|err| {
            Error::database(
                format!("cannot record rejected rows of pipeline {pipeline:?}"),
                err,
            )
        })?;
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
             first_failed_at, last_failed_at FROM {}dead_letters \
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

    /// Counts another failed attempt of a dead letter, with the destination's new reason.
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

/// Rejected rows written by one statement: 3 parameters each, far below every database's
/// limit on parameters.
pub const CHUNK: usize = 500;

/// `rejected` in statements of at most [`CHUNK`] rows. A row rejected twice in one answer
/// keeps its last reason: one statement cannot update the same letter twice.
fn chunks(rejected: &[RejectedRow]) -> Vec<Vec<&RejectedRow>> {
    let mut last = std::collections::HashMap::with_capacity(rejected.len());
    for (position, row) in rejected.iter().enumerate() {
        last.insert(row.index, position);
    }
    let unique: Vec<&RejectedRow> = rejected
        .iter()
        .enumerate()
        .filter(|(position, row)| last.get(&row.index) == Some(position))
        .map(|(_, row)| row)
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
    })
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
        let chunks = super::chunks(&many);
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [super::CHUNK, super::CHUNK, 201]);
        let sevens: Vec<&str> = chunks
            .iter()
            .flatten()
            .filter(|row| row.index == 7)
            .map(|row| row.reason.as_str())
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
