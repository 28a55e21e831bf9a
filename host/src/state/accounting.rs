//! Accounting: what each pipeline has cost (time, fuel and memory in modules) and suffered
//! (rejected rows, retries, errors), over its life.
//!
//! Counts are only ever added to, each in one statement, so they take no part in the
//! checkpoint's compare-and-set. What a delivered batch used is charged with its checkpoint
//! ([`StateStore::commit_batch`]); what failed calls used is charged by the caller, with
//! [`StateStore::charge`], since an error does not say what it cost.

use std::time::Duration;

use sqlx::any::AnyRow;

use super::{column, now_rfc3339, to_bigint, Bind, Identity, StateStore};
use crate::model::error::{Error, Result};
use crate::model::Usage;

/// What a pipeline has cost and suffered, over its life.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Accounting {
    pub rows_rejected: i64,
    /// Rows a module failed on alone, set aside as dead letters so the rest went on.
    pub rows_parked: i64,
    /// Rejected rows still kept, waiting for `host retry`.
    pub dead_letters: i64,
    /// Times a destination asked for a batch again.
    pub retries: i64,
    /// Failed passes and runs (each retried or restarted later).
    pub errors: i64,
    /// What its module calls used, failed ones included.
    pub usage: Usage,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

impl Accounting {
    pub(super) fn decode(row: &AnyRow) -> Result<Self> {
        Ok(Accounting {
            rows_rejected: column(row, "rows_rejected")?,
            rows_parked: column(row, "rows_parked")?,
            dead_letters: column(row, "dead_letters")?,
            retries: column(row, "retries")?,
            errors: column(row, "errors")?,
            usage: Usage {
                // Kept as whole microseconds, so that sums stay exact.
                time: Duration::from_micros(column::<i64>(row, "guest_micros")?.max(0) as u64),
                fuel: column::<i64>(row, "fuel_used")?.max(0) as u64,
                peak_memory: column::<i64>(row, "peak_guest_memory")?.max(0) as u64,
            },
            last_error: column(row, "last_error")?,
            last_error_at: column(row, "last_error_at")?,
        })
    }
}

/// What module calls used, in the store's units.
pub(super) struct Charge {
    usage: Usage,
    micros: i64,
    fuel: i64,
    peak_memory: i64,
}

impl Charge {
    pub(super) fn new(usage: Usage) -> Self {
        Charge {
            usage,
            micros: to_bigint(usage.time.as_micros()),
            fuel: to_bigint(usage.fuel),
            peak_memory: to_bigint(usage.peak_memory),
        }
    }

    /// The assignments that add a charge whose [`Charge::binds`] are `$first`, `$first + 1`
    /// and `$first + 2`. Time and fuel add up; memory keeps its peak.
    pub(super) fn assignments(first: usize) -> String {
        let (micros, fuel, peak) = (first, first + 1, first + 2);
        format!(
            "guest_micros = guest_micros + ${micros}, fuel_used = fuel_used + ${fuel}, \
             peak_guest_memory = CASE WHEN peak_guest_memory < ${peak} THEN ${peak} \
             ELSE peak_guest_memory END"
        )
    }

    pub(super) fn binds(&self) -> [Bind<'static>; 3] {
        [
            Bind::Int(self.micros),
            Bind::Int(self.fuel),
            Bind::Int(self.peak_memory),
        ]
    }

    /// Adds the charge to accounting read earlier, as the store added it.
    pub(super) fn add_to(&self, accounting: &mut Accounting) {
        accounting.usage.add(self.usage);
    }
}

impl StateStore {
    /// Charges `pipeline` for module calls that ended without a delivery (a failed attempt):
    /// their time, fuel, and the memory they reached. A pipeline the store does not hold is
    /// not charged.
    pub async fn charge(&self, pipeline: &str, usage: Usage) -> Result<()> {
        let sql = format!(
            "UPDATE {}pipelines SET {} WHERE pipeline = $1",
            self.prefix,
            Charge::assignments(2)
        );
        let query = sqlx::query(&sql).bind(pipeline);
        let query = Charge::new(usage)
            .binds()
            .into_iter()
            .fold(query, |query, value| value.bind_to(query));
        query
            .execute(&self.pool)
            .await
            .map_err(|err| Error::database(format!("cannot charge pipeline {pipeline:?}"), err))?;
        Ok(())
    }

    /// Counts a failed pass or run of `pipeline`, keeping its message. Touches no watermark,
    /// so it needs no compare-and-set. A pipeline that never got as far as its state (its
    /// database was unreachable from the start) gets a row with its identity but no key yet,
    /// so that `host status` and the metrics show it failing; its first run completes it.
    /// What the failed attempt used is charged apart, with [`StateStore::charge`].
    pub async fn record_error(
        &self,
        pipeline: &str,
        error: &Error,
        identity: Option<&Identity>,
    ) -> Result<()> {
        let failed = |err| Error::database(format!("cannot record an error of {pipeline:?}"), err);
        let now = now_rfc3339();
        let message = format!("{error:#}");
        let updated = sqlx::query(&format!(
            "UPDATE {}pipelines SET errors = errors + 1, last_error = $2, last_error_at = $3 \
             WHERE pipeline = $1",
            self.prefix
        ))
        .bind(pipeline)
        .bind(&message)
        .bind(&now)
        .execute(&self.pool)
        .await
        .map_err(failed)?;
        if let (0, Some(identity)) = (updated.rows_affected(), identity) {
            sqlx::query(&format!(
                "INSERT INTO {}pipelines (pipeline, source, table_name, cursor_column, key_column, \
                 phase, errors, last_error, last_error_at) \
                 VALUES ($1, $2, $3, $4, '', 'start', 1, $5, $6)",
                self.prefix
            ))
            .bind(pipeline)
            .bind(&identity.source)
            .bind(&identity.table)
            .bind(&identity.cursor)
            .bind(&message)
            .bind(&now)
            .execute(&self.pool)
            .await
            .map_err(failed)?;
        }
        Ok(())
    }

    /// Counts a time a destination asked for a batch of `pipeline` again.
    pub async fn record_retry(&self, pipeline: &str) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE {}pipelines SET retries = retries + 1 WHERE pipeline = $1",
            self.prefix
        ))
        .bind(pipeline)
        .execute(&self.pool)
        .await
        .map_err(|err| Error::database(format!("cannot count a retry of {pipeline:?}"), err))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::model::error::Error;
    use crate::model::{Delivered, Usage};

    fn used(time: Duration, fuel: u64, peak_memory: u64) -> Usage {
        Usage {
            time,
            fuel,
            peak_memory,
        }
    }
    use crate::state::testing::{after, identity, users, TempDir};

    #[tokio::test]
    async fn charges_errors_and_deliveries_add_up() {
        let dir = TempDir::new();
        let store = dir.open().await;
        let mut state = users(&store).await;
        store
            .begin_batch(&mut state, "b1", &after("1", "1"))
            .await
            .unwrap();
        let usage = Usage {
            time: Duration::from_millis(250),
            fuel: 1_000,
            peak_memory: 2 << 20,
        };
        store
            .commit_batch(
                &mut state,
                &after("1", "1"),
                &crate::state::testing::rows(3),
                &Delivered::default(),
                usage,
            )
            .await
            .unwrap();
        // A failed attempt: charged by the caller, counted by record_error.
        let failure = Error::fatal("the module trapped");
        store.record_error("users", &failure, None).await.unwrap();
        store
            .charge("users", used(Duration::from_millis(500), 4_000, 1 << 20))
            .await
            .unwrap();
        store.record_retry("users").await.unwrap();
        store
            .charge("users", used(Duration::from_micros(1), 0, 8 << 20))
            .await
            .unwrap();

        let stored = store.load("users").await.unwrap().unwrap().accounting;
        assert_eq!(stored.errors, 1);
        assert_eq!(stored.retries, 1);
        assert_eq!(
            stored.usage,
            used(Duration::from_micros(750_001), 5_000, 8 << 20)
        );
        assert_eq!(stored.last_error.as_deref(), Some("the module trapped"));
        assert!(stored.last_error_at.is_some());
        // What commit_batch counted in memory is what the store holds for it.
        assert_eq!(state.accounting.usage, usage);
    }

    #[tokio::test]
    async fn an_error_before_the_first_run_leaves_a_row_the_run_completes() {
        let dir = TempDir::new();
        let store = dir.open().await;
        let mut unknown = identity();
        unknown.key = String::new();
        let failure = Error::fatal("connection refused");
        store
            .record_error("users", &failure, Some(&unknown))
            .await
            .unwrap();
        // A charge for a pipeline the store does not hold is dropped, not an error.
        store
            .charge("nobody", used(Duration::from_secs(1), 1, 1))
            .await
            .unwrap();
        let state = users(&store).await;
        assert_eq!(state.identity, identity());
        assert_eq!(state.accounting.errors, 1);
        assert_eq!(store.list().await.unwrap().len(), 1);
    }
}
