//! The delivery guarantees, each written once and run on PostgreSQL, MariaDB and SQLite.
//!
//! A scenario is an `async fn(Backend)`; [`on_each_database!`] makes it one test per
//! database, named `sync_scenarios::{postgres,mariadb,sqlite}::SCENARIO`. They live by theme:
//! [`post`] has the six scenarios of "Building a Sync Engine", [`keyset`] what reading by
//! `(cursor, key)` promises beyond them (ties, microseconds, settle, open transactions),
//! [`crashes`] kill -9 and SIGTERM at failpoints, [`writers`] a writer racing a polling host,
//! [`columns`] soft deletes, NULL cursors and columns dropped or renamed while the host polls,
//! [`deletes`] hard deletes (`--detect-deletes`).
//!
//! Fixed past timestamps (`at(µs)`) make most scenarios deterministic; the settle, open
//! transaction and concurrent writer scenarios use the database's clock.

mod columns;
mod crashes;
mod deletes;
mod keyset;
mod post;
mod writers;

use serde_json::{json, Value};

use crate::support::{Backend, Host, TestDb};

use columns::*;
use crashes::*;
use deletes::*;
use keyset::*;
use post::*;
use writers::*;

/// Generates, for each scenario, one `#[tokio::test]` per database: `postgres::NAME`,
/// `mariadb::NAME`, `sqlite::NAME`. Scenarios under `servers` need a server that shows its
/// open transactions, so SQLite does not get them.
macro_rules! on_each_database {
    (all: $all:tt, servers: $servers:tt $(,)?) => {
        crate::support::tests_on!(postgres, Postgres, $all, $servers);
        crate::support::tests_on!(mariadb, MariaDb, $all, $servers);
        crate::support::tests_on!(sqlite, Sqlite, $all);
    };
}

on_each_database! {
    all: [
        first_sync_delivers_every_row_once,
        update_is_delivered_by_next_run,
        row_tied_with_last_delivered_row_is_delivered_by_next_run,
        rows_added_during_a_batch_are_delivered,
        five_thousand_rows_exactly_once_in_cursor_order,
        row_changed_during_its_batch_is_delivered_again,
        tie_of_2000_rows_across_batches_of_7_exactly_once,
        timestamps_one_microsecond_apart_keep_their_microseconds,
        settle_leaves_fresh_rows_for_a_later_run,
        kill_9_after_delivery_redelivers_the_batch_with_its_id,
        kill_9_before_delivery_repeats_nothing,
        sigterm_mid_batch_finishes_and_checkpoints_that_batch,
        concurrent_writers_final_versions_are_delivered,
        soft_deletes_are_delivered_as_deletes,
        null_cursor_oldest_delivers_null_rows_first,
        null_cursor_refused_with_exit_2_then_oldest_delivers_all,
        a_dropped_column_is_never_delivered_as_its_name,
        a_renamed_column_is_never_delivered_as_its_name,
        hard_deletes_arrive_once_each_and_nothing_else_comes_again,
        a_key_deleted_and_inserted_again_ends_present,
        text_and_sparse_keys_are_deleted,
        enabling_on_a_synced_pipeline_delivers_nothing_again,
        kill_9_during_a_delete_batch_redelivers_it_with_its_id,
        hard_deletes_with_a_postgres_state_store,
        char_keys_match_the_rows_they_came_with,
    ],
    servers: [
        row_of_transaction_open_during_a_run_is_delivered_after_commit,
    ],
}

/// A fresh `users` table and a host reading it.
pub(super) async fn users(backend: Backend) -> Option<(TestDb, String, Host)> {
    let db = TestDb::new(backend).await?;
    let table = db.create_users().await;
    let host = Host::new(&db, &table);
    Some((db, table, host))
}

pub(super) fn expected_user(db: &TestDb, id: i64, updated_at: chrono::NaiveDateTime) -> Value {
    json!({
        "id": id,
        "email": format!("user{id}@example.com"),
        "name": format!("user {id}"),
        "updated_at": db.rendered_stamp(updated_at),
    })
}
