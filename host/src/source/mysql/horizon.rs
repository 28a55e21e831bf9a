//! The integer horizon on MySQL and MariaDB (the rule is in the parent module).
//!
//! An integer cursor's horizon (see `ids`) waits for the InnoDB transactions that may hold an
//! auto-increment id: those that hold a table lock (an insert takes IX on its table, right
//! after drawing its id, until the transaction ends), are inside a statement on a table, or are
//! waiting, committing or rolling back. Two things make `innodb_trx` late, and the sighting
//! waits for both: the transaction that draws an id may be listed only a moment after (InnoDB
//! starts it lazily, in the same call), so the list must be filled [`ID_LIST_DELAY`] after the
//! largest id was read; and the table is served from a cache that is refilled only when nobody
//! read it in the last 100 ms, so the list's age is unknown. The sighting reads it inside a
//! transaction of its own whose statement carries a fresh marker: when the cache lists that
//! transaction running that very statement, it was filled during the statement. A stale list
//! is tried again a little later, and until a fresh one comes the new sighting waits (an older
//! list still shows which transactions ended: the cache is only ever replaced by a newer one).

use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlPool, MySqlRow};
use sqlx::{Executor, Row};

use crate::model::error::{Error, Result};
use crate::source::horizon::{IdHorizon, SightsIds, Writer};
use crate::source::keyset::Keyset;

/// How long after reading the largest id the list of transactions must be filled: covers the
/// moment between drawing an auto-increment id and InnoDB listing the transaction with its
/// table lock.
pub const ID_LIST_DELAY: Duration = Duration::from_millis(100);

/// How long `innodb_trx` must go unread before InnoDB refills its cache, and a margin.
const TRX_CACHE_IDLE: Duration = Duration::from_millis(110);

/// Attempts at a fresh list of transactions in one pass.
const FRESH_LIST_ATTEMPTS: usize = 3;

/// One transaction of `innodb_trx`, read as text.
struct TrxRow {
    trx_id: String,
    thread: String,
    started: String,
    open_micros: Option<String>,
    state: String,
    tables_locked: String,
    tables_in_use: String,
    is_self: String,
    runs_marker: String,
}

/// The integer horizon of one InnoDB table, and how its sightings are taken.
pub(crate) struct InnoDbIds {
    pool: MySqlPool,
    horizon: IdHorizon,
    max_id_sql: String,
    /// Whether the user may read `innodb_trx` (PROCESS), until it is refused.
    sees_transactions: bool,
    /// Numbers the markers of the lists of transactions.
    lists_read: u64,
}

impl InnoDbIds {
    /// The horizon of `table`, whose cursor column is `unsigned` or not.
    pub fn new(pool: &MySqlPool, keyset: &Keyset, table: &str, unsigned: bool) -> Self {
        let horizon = if unsigned {
            IdHorizon::new(table, 0, u64::MAX.into())
        } else {
            IdHorizon::new(table, i64::MIN.into(), i64::MAX.into())
        };
        InnoDbIds {
            pool: pool.clone(),
            horizon,
            max_id_sql: format!(
                "SELECT CAST(MAX({}) AS CHAR) FROM {}",
                keyset.cursor, keyset.table
            ),
            sees_transactions: true,
            lists_read: 0,
        }
    }

    /// Says once that the user cannot list transactions, and stops trying.
    fn cannot_list_transactions(&mut self) {
        self.sees_transactions = false;
        tracing::warn!(
            "user cannot read information_schema.innodb_trx (needs PROCESS): ids of {} are \
             final once --settle old, and a transaction that commits a lower id later than \
             that is passed over",
            self.horizon.table()
        );
    }

    /// `innodb_trx`, and whether InnoDB filled it during this call rather than serving an
    /// older copy from its cache (see the module's documentation).
    async fn fresh_transactions(&mut self) -> Result<(Vec<TrxRow>, bool), sqlx::Error> {
        self.lists_read += 1;
        let marker = format!("tidemark list {} {}", std::process::id(), self.lists_read);
        let mut connection = self.pool.acquire().await?;
        // Starts the InnoDB transaction now, so that the cache lists it.
        connection
            .execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await?;
        // The text protocol, so that the statement InnoDB shows is the text sent.
        let sql = format!(
            "SELECT CAST(trx_id AS CHAR), CAST(trx_mysql_thread_id AS CHAR), \
                    CAST(trx_started AS CHAR), \
                    CAST(TIMESTAMPDIFF(MICROSECOND, trx_started, NOW(6)) AS CHAR), \
                    CAST(trx_state AS CHAR), CAST(trx_tables_locked AS CHAR), \
                    CAST(trx_tables_in_use AS CHAR), \
                    CAST(trx_mysql_thread_id = CONNECTION_ID() AS CHAR), \
                    CAST(COALESCE(LOCATE('{marker}', trx_query), 0) > 0 AS CHAR) \
                 FROM information_schema.innodb_trx"
        );
        let rows = connection.fetch_all(sql.as_str()).await;
        // Ends the transaction whatever the list did: the connection goes back to the pool.
        if let Err(err) = connection.execute("ROLLBACK").await {
            connection.close_on_drop();
            return Err(err);
        }
        let text = |row: &MySqlRow, index| row.try_get::<Option<String>, _>(index);
        let rows = rows?
            .iter()
            .map(|row| {
                Ok(TrxRow {
                    trx_id: text(row, 0)?.unwrap_or_default(),
                    thread: text(row, 1)?.unwrap_or_default(),
                    started: text(row, 2)?.unwrap_or_default(),
                    open_micros: text(row, 3)?,
                    state: text(row, 4)?.unwrap_or_default(),
                    tables_locked: text(row, 5)?.unwrap_or_default(),
                    tables_in_use: text(row, 6)?.unwrap_or_default(),
                    is_self: text(row, 7)?.unwrap_or_default(),
                    runs_marker: text(row, 8)?.unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let fresh = rows
            .iter()
            .any(|row| row.is_self == "1" && row.runs_marker == "1");
        Ok((rows, fresh))
    }
}

impl SightsIds for InnoDbIds {
    fn ids(&mut self) -> &mut IdHorizon {
        &mut self.horizon
    }

    fn blind(&self, settle: Duration) -> Option<Duration> {
        (!self.sees_transactions).then_some(settle)
    }

    /// One sighting of the integer horizon (see the module's documentation).
    async fn sight_ids(&mut self, settle: Duration) -> Result<()> {
        let max: Option<String> = sqlx::query_scalar(&self.max_id_sql)
            .fetch_one(&self.pool)
            .await
            .map_err(|err| Error::database("cannot read the largest id", err))?;
        let seen = Instant::now();
        self.horizon
            .sight(max.and_then(|max| max.parse().ok()), seen);
        if !self.sees_transactions {
            self.horizon.settled(settle);
            return Ok(());
        }
        if !self.horizon.is_waiting() {
            return Ok(());
        }
        if self.horizon.needs_list() {
            tokio::time::sleep_until((seen + ID_LIST_DELAY).into()).await;
        }
        for attempt in 1..=FRESH_LIST_ATTEMPTS {
            let asked = Instant::now();
            let (rows, fresh) = match self.fresh_transactions().await {
                Ok((rows, false)) if attempt < FRESH_LIST_ATTEMPTS && self.horizon.needs_list() => {
                    drop(rows);
                    tokio::time::sleep(TRX_CACHE_IDLE).await;
                    continue;
                }
                Ok(list) => list,
                Err(sqlx::Error::Database(err)) if is_access_denied(err.code().as_deref()) => {
                    self.cannot_list_transactions();
                    self.horizon.settled(settle);
                    return Ok(());
                }
                Err(err) => return Err(Error::database("cannot list open transactions", err)),
            };
            let writers: Vec<Writer> = rows
                .iter()
                .filter(|row| row.is_self != "1" && may_hold_an_id(row))
                .map(|row| Writer {
                    id: format!("{}/{}/{}", row.thread, row.trx_id, row.started),
                    label: format!("thread {} (trx {})", row.thread, row.trx_id),
                    open_for: row
                        .open_micros
                        .as_deref()
                        .and_then(|micros| micros.parse::<u64>().ok())
                        .map(Duration::from_micros),
                })
                .collect();
            // A stale list still shows which transactions ended; only a fresh one is complete
            // for the new sighting.
            self.horizon.listed(&writers, fresh.then_some(asked));
            break;
        }
        Ok(())
    }
}

/// Whether an InnoDB transaction may hold an auto-increment id that is not visible yet: it
/// holds a table lock, is inside a statement on a table, or is waiting, committing or rolling
/// back. A transaction that only read and sits idle holds none, and is not waited for.
fn may_hold_an_id(row: &TrxRow) -> bool {
    let positive = |count: &str| count.parse::<u64>().is_ok_and(|count| count > 0);
    positive(&row.tables_locked) || positive(&row.tables_in_use) || row.state != "RUNNING"
}

/// ER_SPECIFIC_ACCESS_DENIED_ERROR and ER_ACCESS_DENIED_ERROR, as SQLSTATE 42000 / 28000.
pub(crate) fn is_access_denied(code: Option<&str>) -> bool {
    matches!(code, Some("42000" | "28000" | "1227" | "1045"))
}
