//! Leases and workers: which `host` process runs each pipeline, and which processes are alive.
//!
//! A worker runs a pipeline only while it holds the pipeline's lease: an owner, a fencing
//! token and an expiry. Times come from the database's clock (`now()` on PostgreSQL), never
//! from the workers', so workers whose clocks disagree still agree on who holds what. Taking
//! a lease that is free or expired adds one to its token; a token therefore names one tenure
//! and only grows. Every checkpoint and dead-letter write of a worker carries the token it
//! was given, and is refused ([`ErrorKind::Fenced`]) in the same transaction when the token
//! is no longer the lease's: a worker that was paused past its lease (GC, SIGSTOP, a
//! partition) cannot move a watermark after another took the pipeline over.
//!
//! On PostgreSQL the check reads the lease `FOR SHARE`, so a takeover (an `UPDATE` of the
//! lease) waits for a checkpoint already under way and every later checkpoint sees the new
//! token. SQLite runs one writer at a time, and one worker per file (see
//! [`crate::cluster::membership`]).

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyQueryResult};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

use super::{column, now_rfc3339, to_bigint, StateStore};
use crate::model::error::{Error, ErrorKind, Result};

/// A pipeline's lease as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub pipeline: String,
    /// `None` once released.
    pub owner: Option<String>,
    pub token: i64,
    /// Milliseconds until it expires by the database's clock (negative: expired).
    pub expires_in_ms: i64,
}

impl LeaseRow {
    /// Held by a worker that renews it.
    pub fn is_held(&self) -> bool {
        self.owner.is_some() && self.expires_in_ms >= 0
    }
}

/// A live worker and what it last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRow {
    pub worker: String,
    pub started_at: String,
    /// Milliseconds until its heartbeat expires by the database's clock.
    pub expires_in_ms: i64,
    pub pipelines: i64,
    pub leases_lost: i64,
    pub fenced: i64,
}

/// What a worker reports with each heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerFigures {
    pub pipelines: u64,
    pub leases_lost: u64,
    pub fenced: u64,
}

impl StateStore {
    /// The database's clock, in milliseconds since 1970, as an SQL expression.
    fn now_ms(&self) -> &'static str {
        if self.is_sqlite() {
            "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
        } else {
            "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)"
        }
    }

    /// Takes the lease of `pipeline` for `owner` if it is free or expired; returns the new
    /// token, or `None` when another worker holds it.
    pub async fn claim(&self, pipeline: &str, owner: &str, ttl: Duration) -> Result<Option<i64>> {
        let sql = format!(
            "INSERT INTO {p}leases AS l (pipeline, owner, token, expires_at) \
             VALUES ($1, $2, 1, {now} + $3) \
             ON CONFLICT (pipeline) DO UPDATE SET owner = excluded.owner, \
             token = l.token + 1, expires_at = excluded.expires_at \
             WHERE l.owner IS NULL OR l.expires_at < {now} \
             RETURNING token",
            p = self.prefix,
            now = self.now_ms()
        );
        sqlx::query_scalar::<_, i64>(&sql)
            .bind(pipeline)
            .bind(owner)
            .bind(millis(ttl))
            .fetch_optional(&self.pool)
            .await
            .map_err(|err| Error::database(format!("cannot claim pipeline {pipeline:?}"), err))
    }

    /// Extends every lease `owner` holds by `ttl` from now; returns them with their tokens. A
    /// lease missing from the answer was taken over.
    pub async fn renew(&self, owner: &str, ttl: Duration) -> Result<BTreeMap<String, i64>> {
        let sql = format!(
            "UPDATE {p}leases SET expires_at = {now} + $2 WHERE owner = $1 \
             RETURNING pipeline, token",
            p = self.prefix,
            now = self.now_ms()
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(millis(ttl))
            .fetch_all(&self.pool)
            .await
            .map_err(|err| Error::database("cannot renew leases", err))?;
        rows.iter()
            .map(|row| Ok((column(row, "pipeline")?, column(row, "token")?)))
            .collect()
    }

    /// Gives the lease of `pipeline` up, if tenure `token` still holds it: another worker
    /// may take it at once.
    pub async fn release(&self, pipeline: &str, token: i64) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE {}leases SET owner = NULL WHERE pipeline = $1 AND token = $2",
            self.prefix
        ))
        .bind(pipeline)
        .bind(token)
        .execute(&self.pool)
        .await
        .map_err(|err| Error::database(format!("cannot release pipeline {pipeline:?}"), err))?;
        Ok(())
    }

    /// Gives up every lease of `owner`, and its place among the workers.
    pub async fn leave(&self, owner: &str) -> Result<u64> {
        let failed = |err| Error::database(format!("cannot release the leases of {owner}"), err);
        let released = sqlx::query(&format!(
            "UPDATE {}leases SET owner = NULL WHERE owner = $1",
            self.prefix
        ))
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(failed)?;
        sqlx::query(&format!(
            "DELETE FROM {}workers WHERE worker = $1",
            self.prefix
        ))
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(failed)?;
        Ok(released.rows_affected())
    }

    /// Frees every lease, whoever holds it: for a store only one worker can use (SQLite,
    /// behind its file lock), where a lease left by a crash has no owner to wait for.
    pub async fn release_everything(&self) -> Result<()> {
        sqlx::query(&format!("UPDATE {}leases SET owner = NULL", self.prefix))
            .execute(&self.pool)
            .await
            .map_err(|err| Error::database("cannot free the leases", err))?;
        Ok(())
    }

    /// Every lease, by pipeline.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>> {
        let sql = format!(
            "SELECT pipeline, owner, token, expires_at - {now} AS expires_in \
             FROM {p}leases ORDER BY pipeline",
            p = self.prefix,
            now = self.now_ms()
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|err| Error::database("cannot read the leases", err))?;
        rows.iter()
            .map(|row| {
                Ok(LeaseRow {
                    pipeline: column(row, "pipeline")?,
                    owner: column(row, "owner")?,
                    token: column(row, "token")?,
                    expires_in_ms: column(row, "expires_in")?,
                })
            })
            .collect()
    }

    /// Says `worker` is alive for `ttl` more, with its figures; forgets workers dead for an
    /// hour.
    pub async fn heartbeat(
        &self,
        worker: &str,
        ttl: Duration,
        figures: WorkerFigures,
    ) -> Result<()> {
        let failed = |err| Error::database("cannot write the worker's heartbeat", err);
        let sql = format!(
            "INSERT INTO {p}workers AS w (worker, started_at, expires_at, pipelines, \
             leases_lost, fenced) VALUES ($1, $2, {now} + $3, $4, $5, $6) \
             ON CONFLICT (worker) DO UPDATE SET expires_at = excluded.expires_at, \
             pipelines = excluded.pipelines, leases_lost = excluded.leases_lost, \
             fenced = excluded.fenced",
            p = self.prefix,
            now = self.now_ms()
        );
        sqlx::query(&sql)
            .bind(worker)
            .bind(now_rfc3339())
            .bind(millis(ttl))
            .bind(to_bigint(figures.pipelines))
            .bind(to_bigint(figures.leases_lost))
            .bind(to_bigint(figures.fenced))
            .execute(&self.pool)
            .await
            .map_err(failed)?;
        sqlx::query(&format!(
            "DELETE FROM {p}workers WHERE expires_at < {now} - 3600000",
            p = self.prefix,
            now = self.now_ms()
        ))
        .execute(&self.pool)
        .await
        .map_err(failed)?;
        Ok(())
    }

    /// The workers whose heartbeat has not expired, by name.
    pub async fn live_workers(&self) -> Result<Vec<WorkerRow>> {
        let sql = format!(
            "SELECT worker, started_at, expires_at - {now} AS expires_in, pipelines, \
             leases_lost, fenced FROM {p}workers WHERE expires_at >= {now} ORDER BY worker",
            p = self.prefix,
            now = self.now_ms()
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|err| Error::database("cannot read the workers", err))?;
        rows.iter()
            .map(|row| {
                Ok(WorkerRow {
                    worker: column(row, "worker")?,
                    started_at: column(row, "started_at")?,
                    expires_in_ms: column(row, "expires_in")?,
                    pipelines: column(row, "pipelines")?,
                    leases_lost: column(row, "leases_lost")?,
                    fenced: column(row, "fenced")?,
                })
            })
            .collect()
    }

    /// Runs a write of `pipeline` (a dead-letter write), fenced by `token` when the pipeline
    /// runs under a lease: in one transaction with [`StateStore::check_fence`]. `what` says
    /// what the write does, for its error.
    pub(super) async fn execute_fenced<'q>(
        &self,
        pipeline: &str,
        token: Option<i64>,
        query: Query<'q, Any, AnyArguments<'q>>,
        what: &str,
    ) -> Result<AnyQueryResult> {
        let failed = |err| Error::database(format!("cannot {what} pipeline {pipeline:?}"), err);
        if token.is_none() {
            return query.execute(&self.pool).await.map_err(failed);
        }
        let mut transaction = self.pool.begin().await.map_err(failed)?;
        self.check_fence(&mut transaction, pipeline, token, what)
            .await?;
        let result = query.execute(&mut *transaction).await.map_err(failed)?;
        transaction.commit().await.map_err(failed)?;
        Ok(result)
    }

    /// Refuses a write of `pipeline` under lease `token` (none: not run under a lease) once
    /// the token is no longer the lease's. Called inside the write's transaction: the lease
    /// is read there, and on PostgreSQL share-locked, so a takeover (an UPDATE of the lease)
    /// waits for the write under way and every later write sees the new token.
    pub(super) async fn check_fence(
        &self,
        connection: &mut AnyConnection,
        pipeline: &str,
        token: Option<i64>,
        what: &str,
    ) -> Result<()> {
        let Some(token) = token else {
            return Ok(());
        };
        let failed = |err| Error::database(format!("cannot {what} pipeline {pipeline:?}"), err);
        let lock = if self.is_sqlite() { "" } else { " FOR SHARE" };
        let current: Option<(Option<String>, i64)> = sqlx::query(&format!(
            "SELECT owner, token FROM {}leases WHERE pipeline = $1{lock}",
            self.prefix
        ))
        .bind(pipeline)
        .fetch_optional(&mut *connection)
        .await
        .map_err(failed)?
        .map(|row| Ok::<_, Error>((column(&row, "owner")?, column(&row, "token")?)))
        .transpose()?;
        if matches!(&current, Some((Some(_), current)) if *current == token) {
            return Ok(());
        }
        let now = match current {
            Some((Some(owner), current)) => format!("lease {current} of {owner}"),
            Some((None, _)) => "no lease".to_owned(),
            None => "no lease row".to_owned(),
        };
        Err(Error::new(
            ErrorKind::Fenced,
            format!(
                "cannot {what} pipeline {pipeline:?} under lease {token}: the store now \
                 holds {now}; another worker took the pipeline over"
            ),
        ))
    }
}

fn millis(duration: Duration) -> i64 {
    to_bigint(duration.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::{after, users, TempDir};

    #[tokio::test]
    async fn a_checkpoint_under_a_lease_taken_over_is_refused() {
        let dir = TempDir::new();
        let store = dir.open().await;
        let mut state = users(&store).await;
        let ttl = Duration::from_millis(1);
        let first = store.claim("users", "a", ttl).await.unwrap().unwrap();
        assert_eq!(first, 1);
        state.fence = Some(first);
        store
            .advance(&mut state, &after("i:1", "i:1"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = store.claim("users", "b", Duration::from_secs(30)).await;
        assert_eq!(
            second.unwrap(),
            Some(2),
            "an expired lease is taken, its token grows"
        );
        assert_eq!(store.claim("users", "a", ttl).await.unwrap(), None);
        let err = store
            .advance(&mut state, &after("i:2", "i:2"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Fenced);
        assert!(err.to_string().contains("lease 2 of b"), "{err}");
        let err = store.record_letters("users", "b1", Some(first), &[]).await;
        assert!(err.is_ok(), "no letters, no write");
        // The watermark stayed where the first worker left it; the new tenure writes.
        let mut current = store.load("users").await.unwrap().unwrap();
        assert_eq!(current.position, after("i:1", "i:1"));
        current.fence = Some(2);
        store
            .advance(&mut current, &after("i:3", "i:3"))
            .await
            .unwrap();
        // Released, the lease is free at once, and the token moves on.
        store.release("users", 2).await.unwrap();
        assert_eq!(store.claim("users", "a", ttl).await.unwrap(), Some(3));
        let err = store
            .advance(&mut current, &after("i:4", "i:4"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Fenced);
    }

    #[tokio::test]
    async fn workers_heartbeat_and_leave() {
        let dir = TempDir::new();
        let store = dir.open().await;
        let ttl = Duration::from_secs(30);
        let figures = WorkerFigures {
            pipelines: 2,
            leases_lost: 1,
            fenced: 3,
        };
        store.heartbeat("w1", ttl, figures).await.unwrap();
        store.claim("p", "w1", ttl).await.unwrap().unwrap();
        let workers = store.live_workers().await.unwrap();
        assert_eq!(workers.len(), 1);
        assert_eq!((workers[0].pipelines, workers[0].fenced), (2, 3));
        assert!(workers[0].expires_in_ms > 20_000);
        assert_eq!(store.renew("w1", ttl).await.unwrap().len(), 1);
        assert_eq!(store.leave("w1").await.unwrap(), 1);
        assert!(store.live_workers().await.unwrap().is_empty());
        assert!(!store.leases().await.unwrap()[0].is_held());
    }
}
