//! Checkpoints: each pipeline's position, its pending batch, and the compare-and-set on the
//! row's revision that every position write goes through (see [`StateStore`]'s contract).

use sqlx::AnyConnection;

use super::accounting::{Accounting, Charge};
use super::inventory::DeleteChecks;
use super::key_log::KeyLog;
use super::{now_rfc3339, to_bigint, Bind, Identity, StateStore};
use crate::model::error::{Error, Result};
use crate::model::{Delivered, Position, Rows, Usage, Watermark};

/// A batch that was handed on but whose checkpoint was not yet written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBatch {
    pub id: String,
    pub end: Position,
}

/// A pipeline as the store last saw it. Writes through [`StateStore`] keep it in step with
/// the store; a copy that missed a write can no longer write.
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
    /// Why rows already visible waited at the end of the last pass (a transaction still
    /// open), if they did.
    pub held_back: Option<String>,
    pub accounting: Accounting,
    /// The key inventory and what delete checks found (`inventory.rs`).
    pub deletes: DeleteChecks,
    pub(super) revision: i64,
    /// The lease token this pipeline runs under, when a worker holds its lease: every
    /// position write is refused once the token is no longer current (see `leases`).
    pub fence: Option<i64>,
}

impl StateStore {
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
                        Bind::Text(Some(&identity.source)),
                        Bind::Text(Some(&identity.table)),
                        Bind::Text(Some(&identity.cursor)),
                        Bind::Text(Some(&identity.key)),
                        Bind::Text(Some(phase)),
                        Bind::Text(cursor),
                        Bind::Text(key),
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

    /// Records that the batch `id`, ending at `end`, is about to be handed on. The position
    /// stays where it is until [`StateStore::commit_batch`].
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
            &[
                Bind::Text(Some(id)),
                Bind::Text(Some(phase)),
                Bind::Text(cursor),
                Bind::Text(key),
            ],
        )
        .await?;
        state.pending = Some(PendingBatch {
            id: id.to_owned(),
            end: end.clone(),
        });
        Ok(())
    }

    /// Moves the watermark to `end` after a batch of `rows` was handed on, and counts what
    /// delivering it took. A pipeline with a key inventory adds and removes the batch's keys
    /// in the same transaction.
    pub async fn commit_batch(
        &self,
        state: &mut PipelineState,
        end: &Position,
        rows: &Rows,
        delivered: &Delivered,
        usage: Usage,
    ) -> Result<()> {
        let keys = state
            .deletes
            .inventory
            .then(|| KeyLog::of_rows(rows, &state.identity.key));
        let rows = rows.len();
        let (phase, cursor, key) = encode(end);
        let batch = state.pending.as_ref().map(|pending| pending.id.clone());
        let charge = Charge::new(usage);
        let [micros, fuel, peak] = charge.binds();
        self.update_with_keys(
            state,
            keys.as_ref(),
            &format!(
                "phase = $3, cursor_value = $4, key_value = $5, pending_batch = NULL, \
                 pending_phase = NULL, pending_cursor = NULL, pending_key = NULL, \
                 rows_synced = rows_synced + $6, batches_synced = batches_synced + 1, \
                 last_batch = $7, rows_rejected = rows_rejected + $8, \
                 rows_parked = rows_parked + $9, {}",
                Charge::assignments(10)
            ),
            &[
                Bind::Text(Some(phase)),
                Bind::Text(cursor),
                Bind::Text(key),
                Bind::Int(to_bigint(rows)),
                Bind::Text(batch.as_deref()),
                Bind::Int(to_bigint(delivered.rejected.len())),
                Bind::Int(to_bigint(delivered.parked.len())),
                micros,
                fuel,
                peak,
            ],
        )
        .await?;
        state.position = end.clone();
        state.pending = None;
        state.rows_synced += to_bigint(rows);
        state.batches_synced += 1;
        state.last_batch = batch;
        state.accounting.rows_rejected += to_bigint(delivered.rejected.len());
        state.accounting.rows_parked += to_bigint(delivered.parked.len());
        charge.add_to(&mut state.accounting);
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
            &[Bind::Text(Some(phase)), Bind::Text(cursor), Bind::Text(key)],
        )
        .await?;
        state.position = to.clone();
        state.pending = None;
        Ok(())
    }

    /// Records the end of a pass: when, how far the watermark trails the database's now, and
    /// why rows wait for a later pass, if they do.
    pub async fn finish_pass(
        &self,
        state: &mut PipelineState,
        lag_seconds: Option<f64>,
        held_back: Option<&str>,
    ) -> Result<()> {
        let now = now_rfc3339();
        self.update(
            state,
            "last_run_at = $3, lag_seconds = $4, held_back = $5",
            &[
                Bind::Text(Some(&now)),
                Bind::Float(lag_seconds),
                Bind::Text(held_back),
            ],
        )
        .await?;
        state.last_run_at = Some(now);
        state.lag_seconds = lag_seconds;
        state.held_back = held_back.map(str::to_owned);
        Ok(())
    }

    /// Compare-and-set on the revision: `assignments` use `$3…` for `values`, and apply only
    /// if the row is still at the revision `state` was read at.
    pub(super) async fn update(
        &self,
        state: &mut PipelineState,
        assignments: &str,
        values: &[Bind<'_>],
    ) -> Result<()> {
        let name = state.name.clone();
        let failed = |err| Error::database(format!("cannot checkpoint pipeline {name:?}"), err);
        if state.fence.is_none() {
            // One statement is atomic alone: no BEGIN/COMMIT trips to sqlx's SQLite worker.
            let mut connection = self.pool.acquire().await.map_err(failed)?;
            return self
                .update_on(&mut connection, state, assignments, values)
                .await;
        }
        // The lease's fence is checked in the same transaction as the write it guards.
        let mut transaction = self.pool.begin().await.map_err(failed)?;
        self.update_on(&mut transaction, state, assignments, values)
            .await?;
        transaction.commit().await.map_err(failed)
    }

    /// [`StateStore::update`] on `connection`, which may be inside a transaction.
    pub(super) async fn update_on(
        &self,
        connection: &mut AnyConnection,
        state: &mut PipelineState,
        assignments: &str,
        values: &[Bind<'_>],
    ) -> Result<()> {
        let sql = format!(
            "UPDATE {}pipelines SET {assignments}, revision = revision + 1 \
             WHERE pipeline = $1 AND revision = $2",
            self.prefix
        );
        let query = sqlx::query(&sql).bind(&state.name).bind(state.revision);
        let query = values
            .iter()
            .fold(query, |query, value| value.bind_to(query));
        self.check_fence(connection, &state.name, state.fence, "checkpoint")
            .await?;
        let result = query.execute(&mut *connection).await.map_err(|err| {
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
}

/// A position as its three columns: phase, cursor value, key value.
pub(super) fn encode(position: &Position) -> (&'static str, Option<&str>, Option<&str>) {
    match position {
        Position::Nulls { after_key } => ("nulls", None, after_key.as_deref()),
        Position::Start => ("start", None, None),
        Position::After(mark) => ("after", Some(&mark.cursor), Some(&mark.key)),
    }
}

pub(super) fn decode_position(
    phase: &str,
    cursor: Option<String>,
    key: Option<String>,
) -> Result<Position> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::error::ErrorKind;
    use crate::state::testing::{after, identity, rows, users, TempDir};

    fn delivered() -> Delivered {
        Delivered::default()
    }

    #[tokio::test]
    async fn a_pipeline_is_created_once_and_loaded_after() {
        let dir = TempDir::new();
        let store = dir.open().await;
        let nulls = Position::Nulls { after_key: None };
        let created = store
            .load_or_create("users", &identity(), nulls.clone())
            .await
            .unwrap();
        assert_eq!(created.position, nulls);
        assert_eq!(created.identity, identity());
        assert_eq!((created.rows_synced, created.pending.clone()), (0, None));
        // Another host of the same database (a replica) is the same pipeline.
        let mut moved = identity();
        moved.source = "sqlite://replica.db".into();
        let loaded = store
            .load_or_create("users", &moved, Position::Start)
            .await
            .unwrap();
        assert_eq!(loaded.position, nulls);
        assert!(store.load("orders").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn another_table_cursor_or_key_is_refused() {
        let dir = TempDir::new();
        let store = dir.open().await;
        users(&store).await;
        let mut other = identity();
        other.key = "email".into();
        let err = store
            .load_or_create("users", &other, Position::Start)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert!(err.to_string().contains("was created for table"), "{err}");
        assert!(err.hint().unwrap().contains("host reset --pipeline users"));
        assert!(store.reset("users").await.unwrap());
        assert!(!store.reset("users").await.unwrap());
        store
            .load_or_create("users", &other, Position::Start)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_crash_after_begin_batch_leaves_the_batch_pending() {
        let dir = TempDir::new();
        let store = dir.open().await;
        let mut state = users(&store).await;
        store
            .begin_batch(&mut state, "b1", &after("i:5", "i:2"))
            .await
            .unwrap();
        drop(store);
        let state = dir.open().await.load("users").await.unwrap().unwrap();
        assert_eq!(state.position, Position::Start);
        let pending = state.pending.unwrap();
        assert_eq!(
            (pending.id.as_str(), pending.end),
            ("b1", after("i:5", "i:2"))
        );
    }

    #[tokio::test]
    async fn commit_batch_moves_the_position_and_clears_the_pending_batch() {
        let dir = TempDir::new();
        let store = dir.open().await;
        let mut state = users(&store).await;
        let end = after("2024-01-01 00:00:00.000001", "7");
        store.begin_batch(&mut state, "b1", &end).await.unwrap();
        store
            .commit_batch(&mut state, &end, &rows(3), &delivered(), Usage::default())
            .await
            .unwrap();
        store
            .finish_pass(&mut state, Some(1.5), Some("ids above 7 wait"))
            .await
            .unwrap();
        let stored = store.load("users").await.unwrap().unwrap();
        for state in [&state, &stored] {
            assert_eq!(state.position, end);
            assert_eq!(state.pending, None);
            assert_eq!((state.rows_synced, state.batches_synced), (3, 1));
            assert_eq!(state.last_batch.as_deref(), Some("b1"));
            assert_eq!(state.lag_seconds, Some(1.5));
            assert_eq!(state.held_back.as_deref(), Some("ids above 7 wait"));
        }
        assert_eq!(stored.revision, state.revision);
        store.finish_pass(&mut state, None, None).await.unwrap();
        let stored = store.load("users").await.unwrap().unwrap();
        assert_eq!(stored.lag_seconds, None);
        assert_eq!(stored.held_back, None);
        assert!(stored.last_run_at.is_some());
    }

    #[tokio::test]
    async fn a_stale_copy_cannot_write_or_move_the_position_back() {
        let dir = TempDir::new();
        let store = dir.open().await;
        let mut first = users(&store).await;
        let mut second = first.clone();
        let ahead = after("i:9", "i:1");
        store.begin_batch(&mut first, "b1", &ahead).await.unwrap();
        store
            .commit_batch(&mut first, &ahead, &rows(1), &delivered(), Usage::default())
            .await
            .unwrap();
        // The copy read before those writes tries each write the sync loop makes.
        let behind = after("i:3", "i:1");
        let attempts = [
            store.begin_batch(&mut second, "b0", &behind).await,
            store
                .commit_batch(
                    &mut second,
                    &behind,
                    &rows(1),
                    &delivered(),
                    Usage::default(),
                )
                .await,
            store.advance(&mut second, &Position::Start).await,
            store.finish_pass(&mut second, None, None).await,
        ];
        for err in attempts.into_iter().map(Result::unwrap_err) {
            assert_eq!(err.kind(), ErrorKind::Fatal);
            assert!(
                err.to_string().contains("changed by another process"),
                "{err}"
            );
        }
        let stored = store.load("users").await.unwrap().unwrap();
        assert_eq!((stored.position, stored.pending), (ahead, None));
        assert_eq!(stored.rows_synced, 1);
        // The current copy still writes.
        store
            .advance(&mut first, &after("i:10", "i:1"))
            .await
            .unwrap();
    }

    #[test]
    fn positions_round_trip_through_their_columns() {
        for position in [
            Position::Nulls { after_key: None },
            Position::Nulls {
                after_key: Some("i:3".into()),
            },
            Position::Start,
            after("t:2024", "i:1"),
        ] {
            let (phase, cursor, key) = encode(&position);
            let back =
                decode_position(phase, cursor.map(str::to_owned), key.map(str::to_owned)).unwrap();
            assert_eq!(back, position);
        }
        let err = decode_position("after", None, Some("1".into())).unwrap_err();
        assert!(err.to_string().contains("damaged position"), "{err}");
    }
}
