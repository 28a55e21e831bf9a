//! The state store: where each pipeline's watermark lives.
//!
//! Contract: the position of a pipeline only moves forward, and only after its batch was
//! delivered. Every write is a compare-and-set on the row's revision, so two processes that
//! run the same pipeline cannot move it backwards; the second one stops with an error.
//! Before a batch is delivered its id and end are recorded as pending, so that a crash
//! between delivery and checkpoint redelivers the same rows under the same id.
//!
//! Rows a destination rejected are kept as dead letters, one per (pipeline, batch, row), so
//! that a batch delivered twice records its rejections once, with the attempts counted.

use std::path::Path;
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::error::{Error, Result};
use crate::model::{Delivered, Position, RejectedRow, Usage, Watermark};
use crate::source::redact_url;

/// The schema version this build writes; older stores are migrated on open.
const SCHEMA_VERSION: i64 = 2;

pub struct StateStore {
    pool: AnyPool,
    /// `tidemark.` on PostgreSQL, empty on SQLite.
    prefix: &'static str,
}

/// What a pipeline reads: a pipeline keeps its name only while these stay the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub source: String,
    pub table: String,
    pub cursor: String,
    pub key: String,
}

/// A batch that was handed on but whose checkpoint was not yet written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBatch {
    pub id: String,
    pub end: Position,
}

#[derive(Debug, Clone)]
pub struct PipelineState {
    pub name: String,
    pub identity: Identity,
    pub position: Position,
    pub pending: Option<PendingBatch>,
    pub rows_synced: i64,
    pub batches_synced: i64,
    pub last_batch: Option<String>,
    pub last_run_at: Option<String>,
    pub lag_seconds: Option<f64>,
    pub accounting: Accounting,
    revision: i64,
}

/// What a pipeline has cost and suffered, over its life.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Accounting {
    pub rows_rejected: i64,
    /// Rejected rows still kept, waiting for `host retry`.
    pub dead_letters: i64,
    /// Times a destination asked for a batch again.
    pub retries: i64,
    /// Failed passes and runs (each retried or restarted later).
    pub errors: i64,
    /// Wall-clock time spent inside processor calls, failed ones included.
    pub guest_seconds: f64,
    /// Fuel burned, when metered.
    pub fuel_used: i64,
    /// The largest linear memory one of its module instances reached.
    pub peak_guest_memory: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

/// Accounting columns, added to stores created before they existed.
const ACCOUNTING_COLUMNS: &[(&str, &str)] = &[
    ("rows_rejected", "BIGINT NOT NULL DEFAULT 0"),
    ("retries", "BIGINT NOT NULL DEFAULT 0"),
    ("errors", "BIGINT NOT NULL DEFAULT 0"),
    ("guest_micros", "BIGINT NOT NULL DEFAULT 0"),
    ("fuel_used", "BIGINT NOT NULL DEFAULT 0"),
    ("peak_guest_memory", "BIGINT NOT NULL DEFAULT 0"),
    ("last_error", "TEXT"),
    ("last_error_at", "TEXT"),
];

impl PipelineState {
    /// A cursor or key value as a person reads it: without the storage-class tag that
    /// SQLite watermarks carry (`i:42` shows as `42`).
    pub fn shown_value<'a>(&self, value: &'a str) -> &'a str {
        if self.identity.source.starts_with("sqlite:") {
            for tag in ["i:", "r:", "t:"] {
                if let Some(rest) = value.strip_prefix(tag) {
                    return rest;
                }
            }
        }
        value
    }

    /// The position as [`PipelineState::shown_value`] shows its values.
    pub fn shown_position(&self) -> String {
        match &self.position {
            Position::After(mark) => {
                format!(
                    "({}, {})",
                    self.shown_value(&mark.cursor),
                    self.shown_value(&mark.key)
                )
            }
            Position::Nulls {
                after_key: Some(key),
            } => format!("(NULL, {})", self.shown_value(key)),
            other => other.to_string(),
        }
    }
}

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
    /// Opens (creating if needed) the store at `url`: `sqlite://PATH` or `postgres://…`.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (url, prefix) = if let Some(path) = url.strip_prefix("sqlite://") {
            let file = path.split('?').next().unwrap_or(path);
            if let Some(parent) = Path::new(file)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent).map_err(|err| {
                    Error::io(
                        format!("cannot create the state directory {}", parent.display()),
                        err,
                    )
                    .with_hint("pass --state with a writable location")
                })?;
            }
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
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let p = self.prefix;
        let mut statements = Vec::new();
        if p.is_empty() {
            // WAL: a checkpoint survives a crash of the process without a full fsync per batch.
            statements.push("PRAGMA journal_mode = WAL".to_owned());
        } else {
            statements.push("CREATE SCHEMA IF NOT EXISTS tidemark".to_owned());
        }
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {p}schema_version (version BIGINT NOT NULL)"
        ));
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {p}pipelines (
                pipeline TEXT PRIMARY KEY,
                source TEXT NOT NULL,
                table_name TEXT NOT NULL,
                cursor_column TEXT NOT NULL,
                key_column TEXT NOT NULL,
                phase TEXT NOT NULL,
                cursor_value TEXT,
                key_value TEXT,
                pending_batch TEXT,
                pending_phase TEXT,
                pending_cursor TEXT,
                pending_key TEXT,
                rows_synced BIGINT NOT NULL DEFAULT 0,
                batches_synced BIGINT NOT NULL DEFAULT 0,
                last_batch TEXT,
                last_run_at TEXT,
                lag_seconds DOUBLE PRECISION,
                revision BIGINT NOT NULL DEFAULT 0{}
            )",
            ACCOUNTING_COLUMNS
                .iter()
                .map(|(name, ty)| format!(",\n                {name} {ty}"))
                .collect::<String>()
        ));
        let id_column = if p.is_empty() {
            "id INTEGER PRIMARY KEY"
        } else {
            "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
        };
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {p}dead_letters (
                {id_column},
                pipeline TEXT NOT NULL,
                batch_id TEXT NOT NULL,
                row_index BIGINT NOT NULL,
                row_json TEXT NOT NULL,
                reason TEXT NOT NULL,
                attempts BIGINT NOT NULL DEFAULT 1,
                first_failed_at TEXT NOT NULL,
                last_failed_at TEXT NOT NULL,
                UNIQUE (pipeline, batch_id, row_index)
            )"
        ));
        for statement in statements {
            sqlx::query(&statement)
                .execute(&self.pool)
                .await
                .map_err(|err| Error::database("cannot prepare the state store", err))?;
        }
        let version: Option<i64> =
            sqlx::query_scalar(&format!("SELECT MAX(version) FROM {p}schema_version"))
                .fetch_one(&self.pool)
                .await
                .map_err(|err| Error::database("cannot read the state store's version", err))?;
        match version {
            None => {
                sqlx::query(&format!(
                    "INSERT INTO {p}schema_version (version) VALUES ($1)"
                ))
                .bind(SCHEMA_VERSION)
                .execute(&self.pool)
                .await
                .map_err(|err| Error::database("cannot write the state store's version", err))?;
            }
            Some(version) if version < SCHEMA_VERSION => {
                // Version 1 lacks the accounting columns and the dead letters (created above).
                for (name, ty) in ACCOUNTING_COLUMNS {
                    sqlx::query(&format!("ALTER TABLE {p}pipelines ADD COLUMN {name} {ty}"))
                        .execute(&self.pool)
                        .await
                        .map_err(|err| Error::database("cannot upgrade the state store", err))?;
                }
                sqlx::query(&format!("UPDATE {p}schema_version SET version = $1"))
                    .bind(SCHEMA_VERSION)
                    .execute(&self.pool)
                    .await
                    .map_err(|err| {
                        Error::database("cannot write the state store's version", err)
                    })?;
            }
            Some(version) if version > SCHEMA_VERSION => {
                return Err(Error::invalid(format!(
                    "the state store has schema version {version}, newer than this host's {SCHEMA_VERSION}"
                ))
                .with_hint("upgrade host, or pass --state with another store"));
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// The pipeline's state, created at `initial` if it is new. A pipeline that exists with
    /// another table, cursor or key is refused: its watermark means nothing for this one.
    pub async fn load_or_create(
        &self,
        name: &str,
        identity: &Identity,
        initial: Position,
    ) -> Result<PipelineState> {
        if let Some(mut state) = self.load(name).await? {
            // A row left by `record_error` before the first connection: take this identity.
            if state.identity.key.is_empty() && state.batches_synced == 0 && state.pending.is_none()
            {
                let (phase, cursor, key) = encode(&initial);
                self.update(
                    &mut state,
                    "source = $3, table_name = $4, cursor_column = $5, key_column = $6, \
                     phase = $7, cursor_value = $8, key_value = $9",
                    &[
                        Some(&identity.source),
                        Some(&identity.table),
                        Some(&identity.cursor),
                        Some(&identity.key),
                        Some(phase),
                        cursor,
                        key,
                    ],
                )
                .await?;
                state.identity = identity.clone();
                state.position = initial;
                return Ok(state);
            }
            let stored = &state.identity;
            // The host may change (a replica, a failover); the kind of database may not.
            let scheme = |url: &str| url.split("://").next().unwrap_or_default().to_owned();
            if (
                scheme(&stored.source),
                &stored.table,
                &stored.cursor,
                &stored.key,
            ) != (
                scheme(&identity.source),
                &identity.table,
                &identity.cursor,
                &identity.key,
            ) {
                return Err(Error::invalid(format!(
                    "pipeline {name:?} was created for table {:?} of {} with cursor {:?} and key {:?}",
                    stored.table, stored.source, stored.cursor, stored.key
                ))
                .with_hint(format!(
                    "pass --pipeline with another name, or run `host reset --pipeline {name}` to start it over"
                )));
            }
            return Ok(state);
        }
        let (phase, cursor, key) = encode(&initial);
        sqlx::query(&format!(
            "INSERT INTO {}pipelines (pipeline, source, table_name, cursor_column, key_column, \
             phase, cursor_value, key_value) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            self.prefix
        ))
        .bind(name)
        .bind(&identity.source)
        .bind(&identity.table)
        .bind(&identity.cursor)
        .bind(&identity.key)
        .bind(phase)
        .bind(cursor)
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(|err| Error::database(format!("cannot create pipeline {name:?}"), err))?;
        self.load(name)
            .await?
            .ok_or_else(|| Error::fatal(format!("pipeline {name:?} vanished from the state store")))
    }

    pub async fn load(&self, name: &str) -> Result<Option<PipelineState>> {
        let row = sqlx::query(&format!("{} WHERE pipeline = $1", self.select_all()))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|err| Error::database(format!("cannot read pipeline {name:?}"), err))?;
        row.map(|row| decode_state(&row)).transpose()
    }

    pub async fn list(&self) -> Result<Vec<PipelineState>> {
        sqlx::query(&format!("{} ORDER BY pipeline", self.select_all()))
            .fetch_all(&self.pool)
            .await
            .map_err(|err| Error::database("cannot list pipelines", err))?
            .iter()
            .map(decode_state)
            .collect()
    }

    /// Keeps the rows of batch `batch_id` that the destination rejected. Recording the same
    /// rejection again (the batch was delivered again) counts an attempt.
    pub async fn record_rejections(
        &self,
        pipeline: &str,
        batch_id: &str,
        rejected: &[RejectedRow],
    ) -> Result<()> {
        let now = now_rfc3339();
        let mut transaction = self
            .pool
            .begin()
            .await
            .map_err(|err| Error::database("cannot record rejected rows", err))?;
        for row in rejected {
            sqlx::query(&format!(
                "INSERT INTO {p}dead_letters AS d (pipeline, batch_id, row_index, row_json, reason, \
                 first_failed_at, last_failed_at) VALUES ($1, $2, $3, $4, $5, $6, $6) \
                 ON CONFLICT (pipeline, batch_id, row_index) DO UPDATE SET \
                 reason = excluded.reason, last_failed_at = excluded.last_failed_at, \
                 attempts = d.attempts + 1",
                p = self.prefix
            ))
            .bind(pipeline)
            .bind(batch_id)
            .bind(i64::from(row.index))
            .bind(&row.row)
            .bind(&row.reason)
            .bind(&now)
            .execute(&mut *transaction)
            .await
            .map_err(|err| {
                Error::database(
                    format!("cannot record rejected rows of pipeline {pipeline:?}"),
                    err,
                )
            })?;
        }
        transaction
            .commit()
            .await
            .map_err(|err| Error::database("cannot record rejected rows", err))
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
        rows.iter().map(decode_dead_letter).collect()
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

    /// Records that the batch `id`, ending at `end`, is about to be handed on.
    pub async fn begin_batch(
        &self,
        state: &mut PipelineState,
        id: &str,
        end: &Position,
    ) -> Result<()> {
        let (phase, cursor, key) = encode(end);
        self.update(
            state,
            "pending_batch = $3, pending_phase = $4, pending_cursor = $5, pending_key = $6",
            &[Some(id), Some(phase), cursor, key],
        )
        .await?;
        state.pending = Some(PendingBatch {
            id: id.to_owned(),
            end: end.clone(),
        });
        Ok(())
    }

    /// Moves the watermark to `end` after a batch of `rows` rows was handed on, and counts
    /// what delivering it took.
    pub async fn commit_batch(
        &self,
        state: &mut PipelineState,
        end: &Position,
        rows: usize,
        delivered: &Delivered,
        usage: Usage,
    ) -> Result<()> {
        let (phase, cursor, key) = encode(end);
        let batch = state.pending.as_ref().map(|pending| pending.id.clone());
        let counts = [
            rows as i64,
            delivered.rejected.len() as i64,
            usage.time.as_micros() as i64,
            usage.fuel as i64,
            usage.peak_memory as i64,
        ]
        .map(|count| count.to_string());
        self.update(
            state,
            "phase = $3, cursor_value = $4, key_value = $5, pending_batch = NULL, \
             pending_phase = NULL, pending_cursor = NULL, pending_key = NULL, \
             rows_synced = rows_synced + CAST($6 AS BIGINT), batches_synced = batches_synced + 1, \
             last_batch = $7, rows_rejected = rows_rejected + CAST($8 AS BIGINT), \
             guest_micros = guest_micros + CAST($9 AS BIGINT), \
             fuel_used = fuel_used + CAST($10 AS BIGINT), \
             peak_guest_memory = CASE WHEN peak_guest_memory < CAST($11 AS BIGINT) \
             THEN CAST($11 AS BIGINT) ELSE peak_guest_memory END",
            &[
                Some(phase),
                cursor,
                key,
                Some(&counts[0]),
                batch.as_deref(),
                Some(&counts[1]),
                Some(&counts[2]),
                Some(&counts[3]),
                Some(&counts[4]),
            ],
        )
        .await?;
        state.position = end.clone();
        state.pending = None;
        state.rows_synced += rows as i64;
        state.batches_synced += 1;
        state.last_batch = batch;
        let accounting = &mut state.accounting;
        accounting.rows_rejected += delivered.rejected.len() as i64;
        accounting.guest_seconds += usage.time.as_secs_f64();
        accounting.fuel_used += usage.fuel as i64;
        accounting.peak_guest_memory = accounting.peak_guest_memory.max(usage.peak_memory as i64);
        Ok(())
    }

    /// Counts a failed pass or run of `pipeline`, keeping its message. Touches no watermark,
    /// so it needs no compare-and-set. A pipeline that never got as far as its state (its
    /// database was unreachable from the start) gets a row with its identity but no key yet,
    /// so that `host status` and the metrics show it failing; its first run completes it.
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

    /// Charges what module calls of `pipeline` used on attempts that were not checkpointed.
    pub async fn charge(&self, pipeline: &str, usage: Usage) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE {}pipelines SET guest_micros = guest_micros + $2, fuel_used = fuel_used + $3, \
             peak_guest_memory = CASE WHEN peak_guest_memory < $4 THEN $4 \
             ELSE peak_guest_memory END WHERE pipeline = $1",
            self.prefix
        ))
        .bind(pipeline)
        .bind(usage.time.as_micros() as i64)
        .bind(usage.fuel as i64)
        .bind(usage.peak_memory as i64)
        .execute(&self.pool)
        .await
        .map_err(|err| {
            Error::database(format!("cannot charge module usage of {pipeline:?}"), err)
        })?;
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

    /// Moves the watermark without a batch: past NULL cursors that are done, or past a
    /// pending batch whose rows have all moved on.
    pub async fn advance(&self, state: &mut PipelineState, to: &Position) -> Result<()> {
        let (phase, cursor, key) = encode(to);
        self.update(
            state,
            "phase = $3, cursor_value = $4, key_value = $5, pending_batch = NULL, \
             pending_phase = NULL, pending_cursor = NULL, pending_key = NULL",
            &[Some(phase), cursor, key],
        )
        .await?;
        state.position = to.clone();
        state.pending = None;
        Ok(())
    }

    /// Records the end of a pass: when, and how far the watermark trails the database's now.
    pub async fn finish_pass(
        &self,
        state: &mut PipelineState,
        lag_seconds: Option<f64>,
    ) -> Result<()> {
        let now = now_rfc3339();
        let lag = lag_seconds.map(|lag| lag.to_string());
        self.update(
            state,
            "last_run_at = $3, lag_seconds = CAST($4 AS DOUBLE PRECISION)",
            &[Some(&now), lag.as_deref()],
        )
        .await?;
        state.last_run_at = Some(now);
        state.lag_seconds = lag_seconds;
        Ok(())
    }

    /// Compare-and-set on the revision: `assignments` use `$3…` for `values`.
    async fn update(
        &self,
        state: &mut PipelineState,
        assignments: &str,
        values: &[Option<&str>],
    ) -> Result<()> {
        let sql = format!(
            "UPDATE {}pipelines SET {assignments}, revision = revision + 1 \
             WHERE pipeline = $1 AND revision = $2",
            self.prefix
        );
        let mut query = sqlx::query(&sql).bind(&state.name).bind(state.revision);
        for value in values {
            query = query.bind(value.map(str::to_owned));
        }
        let result = query.execute(&self.pool).await.map_err(|err| {
            Error::database(format!("cannot checkpoint pipeline {:?}", state.name), err)
        })?;
        if result.rows_affected() != 1 {
            return Err(Error::fatal(format!(
                "pipeline {:?} was changed by another process",
                state.name
            ))
            .with_hint("run each pipeline in one process at a time"));
        }
        state.revision += 1;
        Ok(())
    }

    fn select_all(&self) -> String {
        format!(
            "SELECT pipeline, source, table_name, cursor_column, key_column, phase, cursor_value, \
             key_value, pending_batch, pending_phase, pending_cursor, pending_key, rows_synced, \
             batches_synced, last_batch, last_run_at, lag_seconds, revision, rows_rejected, \
             retries, errors, guest_micros, fuel_used, peak_guest_memory, last_error, \
             last_error_at, (SELECT COUNT(*) FROM {p}dead_letters d \
             WHERE d.pipeline = pipelines.pipeline) FROM {p}pipelines AS pipelines",
            p = self.prefix
        )
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn read_error(err: sqlx::Error) -> Error {
    Error::fatal(format!("cannot read the state store: {err}"))
}

fn decode_dead_letter(row: &AnyRow) -> Result<DeadLetter> {
    let row_json: String = row.try_get(4).map_err(read_error)?;
    Ok(DeadLetter {
        id: row.try_get(0).map_err(read_error)?,
        pipeline: row.try_get(1).map_err(read_error)?,
        batch_id: row.try_get(2).map_err(read_error)?,
        index: row.try_get(3).map_err(read_error)?,
        row: serde_json::value::RawValue::from_string(row_json)
            .map_err(|err| Error::fatal(format!("a dead letter holds a damaged row: {err}")))?,
        reason: row.try_get(5).map_err(read_error)?,
        attempts: row.try_get(6).map_err(read_error)?,
        first_failed_at: row.try_get(7).map_err(read_error)?,
        last_failed_at: row.try_get(8).map_err(read_error)?,
    })
}

fn encode(position: &Position) -> (&'static str, Option<&str>, Option<&str>) {
    match position {
        Position::Nulls { after_key } => ("nulls", None, after_key.as_deref()),
        Position::Start => ("start", None, None),
        Position::After(mark) => ("after", Some(&mark.cursor), Some(&mark.key)),
    }
}

fn decode_position(phase: &str, cursor: Option<String>, key: Option<String>) -> Result<Position> {
    match (phase, cursor, key) {
        ("nulls", None, after_key) => Ok(Position::Nulls { after_key }),
        ("start", None, None) => Ok(Position::Start),
        ("after", Some(cursor), Some(key)) => Ok(Position::After(Watermark { cursor, key })),
        (phase, ..) => Err(Error::fatal(format!(
            "the state store holds a damaged position (phase {phase:?})"
        ))
        .with_hint("run `host reset --pipeline NAME` to start the pipeline over")),
    }
}

fn decode_state(row: &AnyRow) -> Result<PipelineState> {
    let get = |index: usize| -> Result<Option<String>> {
        row.try_get(index)
            .map_err(|err| Error::fatal(format!("cannot read the state store: {err}")))
    };
    let required = |index: usize| -> Result<String> { Ok(get(index)?.unwrap_or_default()) };
    let number = |index: usize| -> Result<i64> {
        row.try_get(index)
            .map_err(|err| Error::fatal(format!("cannot read the state store: {err}")))
    };
    let position = decode_position(&required(5)?, get(6)?, get(7)?)?;
    let pending = match get(8)? {
        Some(id) => Some(PendingBatch {
            id,
            end: decode_position(&required(9)?, get(10)?, get(11)?)?,
        }),
        None => None,
    };
    Ok(PipelineState {
        name: required(0)?,
        identity: Identity {
            source: required(1)?,
            table: required(2)?,
            cursor: required(3)?,
            key: required(4)?,
        },
        position,
        pending,
        rows_synced: number(12)?,
        batches_synced: number(13)?,
        last_batch: get(14)?,
        last_run_at: get(15)?,
        lag_seconds: row
            .try_get(16)
            .map_err(|err| Error::fatal(format!("cannot read the state store: {err}")))?,
        revision: number(17)?,
        accounting: Accounting {
            rows_rejected: number(18)?,
            retries: number(19)?,
            errors: number(20)?,
            guest_seconds: number(21)? as f64 / 1e6,
            fuel_used: number(22)?,
            peak_guest_memory: number(23)?,
            last_error: get(24)?,
            last_error_at: get(25)?,
            dead_letters: number(26)?,
        },
    })
}
