//! The state store: where each pipeline's watermark lives, with what the pipeline cost and
//! the rows its destination rejected.
//!
//! This module opens the store and reads pipelines back; the jobs live apart: [`file`] (the
//! SQLite file and who may read it), `schema` (versions and migrations), `checkpoint`
//! (positions and the compare-and-set that guards them), `dead_letters` and
//! `accounting`, `leases` (which worker runs each pipeline, and the fencing of its writes). How a watermark reads to a person is the source driver's business
//! ([`crate::source::Driver::shown_value`]), not the store's.

mod accounting;
mod checkpoint;
mod dead_letters;
mod file;
mod inventory;
mod key_log;
mod leases;
mod schema;

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::AnyPool;

use crate::model::backoff::Backoff;
use crate::model::error::{Error, ErrorKind, Result};
use crate::model::redact::redact_url;

pub use accounting::Accounting;
use checkpoint::decode_position;
pub use checkpoint::{PendingBatch, PipelineState};
pub use dead_letters::{DeadLetter, NewLetter};
pub use inventory::{CheckReport, DeleteChecks};
pub use leases::{LeaseRow, WorkerFigures, WorkerRow};

/// What a pipeline reads: a pipeline keeps its name only while these stay the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub source: String,
    pub table: String,
    pub cursor: String,
    pub key: String,
}

/// The pipelines' checkpoints, kept in SQLite (`sqlite://PATH`) or PostgreSQL
/// (`postgres://…`, in the schema `tidemark`).
///
/// Contract:
/// - A pipeline's position only moves forward, and only after the batch that ends there was
///   delivered: [`StateStore::commit_batch`] follows the destination's answer, and
///   [`StateStore::advance`] only skips rows that need no delivery.
/// - Every write of a position is a compare-and-set on the pipeline's revision. A
///   [`PipelineState`] whose revision is stale (another process wrote since it was loaded)
///   cannot write: the write fails with a fatal error, and the stored position stays as the
///   other process left it. So two processes that run one pipeline never move it backwards.
/// - What a crash leaves: [`StateStore::begin_batch`] records a batch's id and end as pending
///   before the batch is handed on. A crash between delivery and checkpoint leaves the batch
///   pending; the next run reads the same rows again, through the same end, and delivers them
///   under the same id, so a destination can drop a batch it has already seen. Delivery is at
///   least once, never with a gap.
/// - Counters (rows, accounting) and dead letters are only ever added to, in one statement
///   each, so they need no revision: two writers cannot lose each other's counts.
pub struct StateStore {
    pool: AnyPool,
    /// `tidemark.` on PostgreSQL, empty on SQLite.
    prefix: &'static str,
}

impl StateStore {
    /// Opens (creating if needed) the store at `url`: `sqlite://PATH` or `postgres://…`.
    ///
    /// A new SQLite store is readable by its owner only: it holds source URLs and rows that
    /// destinations rejected.
    pub async fn open(url: &str) -> Result<Self> {
        // SQLite answers some lock conflicts with "database is locked" at once, without waiting
        // for the busy timeout: hosts turning a new store to WAL at the same time (a `host run`
        // starting and the `host status` watching it) all fail but one, and a connection meets
        // the same while another recovers the file or cleans up after the last connection.
        // Such a conflict passes in milliseconds: try again for a while.
        const BUSY_FOR_AT_MOST: Duration = Duration::from_secs(10);
        let start = Instant::now();
        let mut pauses = BUSY_PAUSES;
        loop {
            match Self::open_once(url).await {
                Err(err)
                    if url.starts_with("sqlite://")
                        && err.kind() == ErrorKind::Transient
                        && start.elapsed() < BUSY_FOR_AT_MOST =>
                {
                    tracing::debug!("the state store is busy, trying again: {err:#}");
                    tokio::time::sleep(pauses.next_wait()).await;
                }
                opened => return opened,
            }
        }
    }

    async fn open_once(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (url, prefix) = if let Some(path) = url.strip_prefix("sqlite://") {
            file::prepare(path)?;
            crate::model::sqlite_quotes::refuse_double_quoted_strings()?;
            let separator = if path.contains('?') { '&' } else { '?' };
            (format!("sqlite://{path}{separator}mode=rwc"), "")
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (url.to_owned(), "tidemark.")
        } else {
            return Err(
                Error::invalid(format!("unsupported state URL {:?}", redact_url(url)))
                    .with_hint("pass --state sqlite://PATH or --state postgres://…"),
            );
        };
        let options = AnyConnectOptions::from_str(&url).map_err(|err| {
            Error::invalid(format!("invalid state URL {:?}: {err}", redact_url(&url)))
                .with_hint("pass --state sqlite://PATH or --state postgres://…")
        })?;
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            // A file does not hang up: pinging SQLite before each use of the connection
            // would only add a trip to its worker thread to every checkpoint (issue 13).
            .test_before_acquire(!prefix.is_empty())
            .after_connect(|connection, _| {
                Box::pin(async move {
                    if connection.backend_name() == "SQLite" {
                        // With WAL, NORMAL keeps every commit across a crash of the process and
                        // skips the fsync per commit; a power loss can roll back the last
                        // checkpoints, which redelivers batches but never skips one.
                        sqlx::Executor::execute(&mut *connection, "PRAGMA synchronous = NORMAL")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|err| {
                Error::database(
                    format!("cannot open the state store {}", redact_url(&url)),
                    err,
                )
            })?;
        let store = StateStore { pool, prefix };
        schema::migrate(&store.pool, store.is_sqlite()).await?;
        Ok(store)
    }

    /// A second handle on the same store with a connection of its own, opened when first
    /// used: for readers (metrics) that must neither wait behind a checkpoint nor hold one up.
    /// SQLite's write-ahead log lets it read while the other connection writes.
    pub fn reader(&self) -> StateStore {
        let options = (*self.pool.connect_options()).clone();
        StateStore {
            pool: AnyPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(options),
            prefix: self.prefix,
        }
    }

    pub fn is_sqlite(&self) -> bool {
        self.prefix.is_empty()
    }

    /// The pipeline called `name`, if the store holds it.
    pub async fn load(&self, name: &str) -> Result<Option<PipelineState>> {
        let row = sqlx::query(&format!("{} WHERE pipeline = $1", self.select_all()))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|err| Error::database(format!("cannot read pipeline {name:?}"), err))?;
        row.map(|row| decode_state(&row)).transpose()
    }

    /// Every pipeline, by name.
    pub async fn list(&self) -> Result<Vec<PipelineState>> {
        sqlx::query(&format!("{} ORDER BY pipeline", self.select_all()))
            .fetch_all(&self.pool)
            .await
            .map_err(|err| Error::database("cannot list pipelines", err))?
            .iter()
            .map(decode_state)
            .collect()
    }

    /// Forgets a pipeline; returns whether it existed.
    pub async fn reset(&self, name: &str) -> Result<bool> {
        let result = sqlx::query(&format!(
            "DELETE FROM {}pipelines WHERE pipeline = $1",
            self.prefix
        ))
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(|err| Error::database(format!("cannot reset pipeline {name:?}"), err))?;
        Ok(result.rows_affected() > 0)
    }

    /// Every pipeline column, and how many dead letters the pipeline keeps.
    fn select_all(&self) -> String {
        format!(
            "SELECT pipelines.*, (SELECT COUNT(*) FROM {p}dead_letters d \
             WHERE d.pipeline = pipelines.pipeline) AS dead_letters \
             FROM {p}pipelines AS pipelines",
            p = self.prefix
        )
    }
}

/// A row of [`StateStore::select_all`], read by column name.
fn decode_state(row: &AnyRow) -> Result<PipelineState> {
    let position = decode_position(
        &column::<String>(row, "phase")?,
        column(row, "cursor_value")?,
        column(row, "key_value")?,
    )?;
    let pending = match column::<Option<String>>(row, "pending_batch")? {
        Some(id) => Some(PendingBatch {
            id,
            end: decode_position(
                &column::<Option<String>>(row, "pending_phase")?.unwrap_or_default(),
                column(row, "pending_cursor")?,
                column(row, "pending_key")?,
            )?,
        }),
        None => None,
    };
    Ok(PipelineState {
        name: column(row, "pipeline")?,
        identity: Identity {
            source: column(row, "source")?,
            table: column(row, "table_name")?,
            cursor: column(row, "cursor_column")?,
            key: column(row, "key_column")?,
        },
        position,
        pending,
        rows_synced: column(row, "rows_synced")?,
        batches_synced: column(row, "batches_synced")?,
        last_batch: column(row, "last_batch")?,
        last_run_at: column(row, "last_run_at")?,
        lag_seconds: column(row, "lag_seconds")?,
        held_back: column(row, "held_back")?,
        accounting: Accounting::decode(row)?,
        deletes: DeleteChecks::decode(row)?,
        revision: column(row, "revision")?,
        fence: None,
    })
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Column `name` of a row read from the store.
fn column<'r, T>(row: &'r AnyRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    sqlx::Row::try_get(row, name).map_err(|err| {
        Error::fatal(format!(
            "cannot read column {name:?} of the state store: {err}"
        ))
    })
}

/// A value bound to a statement built at run time: numbers go to the database as numbers,
/// and a NULL keeps its type.
#[derive(Debug, Clone, Copy)]
enum Bind<'a> {
    Text(Option<&'a str>),
    Int(i64),
    Float(Option<f64>),
}

impl<'a> Bind<'a> {
    fn bind_to(
        self,
        query: sqlx::query::Query<'a, sqlx::Any, sqlx::any::AnyArguments<'a>>,
    ) -> sqlx::query::Query<'a, sqlx::Any, sqlx::any::AnyArguments<'a>> {
        match self {
            Bind::Text(text) => query.bind(text),
            Bind::Int(number) => query.bind(number),
            Bind::Float(number) => query.bind(number),
        }
    }
}

/// The pauses before opening a busy SQLite store again: 5 ms doubling to 200 ms.
const BUSY_PAUSES: Backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(200));

/// A count or size as the store keeps it: a BIGINT, saturated rather than wrapped.
fn to_bigint(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Stores in a fresh directory that is removed with it, for the tests of each job.

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::StateStore;
    use crate::model::{Position, Watermark};
    use crate::state::Identity;

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "tidemark-state-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            TempDir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }

        /// The URL of a store file in this directory (the directory is created on open).
        pub fn url(&self) -> String {
            format!("sqlite://{}", self.0.join("state.db").display())
        }

        pub async fn open(&self) -> StateStore {
            StateStore::open(&self.url()).await.unwrap()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub fn identity() -> Identity {
        Identity {
            source: "sqlite://app.db".into(),
            table: "users".into(),
            cursor: "updated_at".into(),
            key: "id".into(),
        }
    }

    /// Pipeline `users` of [`identity`], created at the start if new.
    pub async fn users(store: &StateStore) -> crate::state::PipelineState {
        store
            .load_or_create("users", &identity(), Position::Start)
            .await
            .unwrap()
    }

    /// `count` rows of keys 1, 2, …
    pub fn rows(count: i64) -> crate::model::Rows {
        let mut rows = crate::model::Rows::default();
        for id in 1..=count {
            rows.buffer()
                .extend_from_slice(format!("{{\"id\":{id}}}").as_bytes());
            rows.end_row(crate::model::Op::Upsert);
        }
        rows
    }

    pub fn after(cursor: &str, key: &str) -> Position {
        Position::After(Watermark {
            cursor: cursor.into(),
            key: key.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TempDir;
    use super::*;

    #[tokio::test]
    async fn unknown_state_urls_are_refused() {
        let err = StateStore::open("mysql://root@localhost/state")
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert!(err.to_string().contains("unsupported state URL"), "{err}");
    }

    #[tokio::test]
    async fn a_store_reopens_with_what_it_held() {
        let dir = TempDir::new();
        let store = dir.open().await;
        store
            .load_or_create("users", &testing::identity(), crate::model::Position::Start)
            .await
            .unwrap();
        drop(store);
        let names: Vec<String> = dir
            .open()
            .await
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|state| state.name)
            .collect();
        assert_eq!(names, ["users"]);
    }

    /// SQLite takes a double-quoted name that is no column for a string literal (issue 24):
    /// the store's connections, the reader's too, refuse it, as every SQLite connection of
    /// the host does (`crate::model::sqlite_quotes`).
    #[tokio::test]
    async fn the_store_refuses_double_quoted_strings() {
        let dir = TempDir::new();
        let store = dir.open().await;
        for handle in [&store, &store.reader()] {
            let err = sqlx::query("SELECT \"no_such_column\" FROM pipelines")
                .fetch_all(&handle.pool)
                .await
                .err()
                .expect("a double-quoted name that is no column must not be a string");
            assert!(err.to_string().contains("no such column"), "{err}");
        }
    }

    /// The pauses between the first `tries` opens of a busy SQLite store.
    fn busy_pauses(tries: usize) -> Vec<u128> {
        let mut pauses = BUSY_PAUSES;
        (0..tries).map(|_| pauses.next_wait().as_millis()).collect()
    }

    /// Pins the pauses of the open retry: 5 ms doubling to 200 ms.
    #[test]
    fn busy_pauses_stay_as_they_are() {
        assert_eq!(busy_pauses(9), [5, 10, 20, 40, 80, 160, 200, 200, 200]);
        assert_eq!(busy_pauses(100)[99], 200);
    }

    /// Hosts starting side by side on a new store (a `host run` and the `host status` watching
    /// it) each turn it to WAL at once; SQLite refuses all but one without waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn hosts_opening_a_new_store_at_once_all_open_it() {
        for _ in 0..20 {
            let dir = TempDir::new();
            let url = dir.url();
            let opens = (0..3).map(|_| StateStore::open(&url));
            for opened in futures_util::future::join_all(opens).await {
                let store = opened.expect("every host opens the store");
                assert!(store.list().await.unwrap().is_empty());
            }
        }
    }
}
