//! Columns with a meaning of their own: a soft-delete column, and a cursor column that may
//! be NULL; and columns that go away while the host polls.

use std::time::{Duration, Instant};

use crate::support::host::{assert_mentions, error_report};
use crate::support::lines::{assert_each_once, ids, Line};
use crate::support::{at, Backend, Col, Host, TestDb, Val};

/// With `--deleted-column deleted_at`, rows whose `deleted_at` is set come out as deletes,
/// on the first sync and when soft-deleted later; clearing it makes the row an upsert again.
pub(super) async fn soft_deletes_are_delivered_as_deletes(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let deleted = |id| if id == 2 { Val::Ts(at(500)) } else { Val::Null };
    let table = users_and(
        &db,
        ("deleted_at", Col::NullableStamp),
        (1..=4).map(|id| (id, deleted(id))),
    )
    .await;
    let mut host = Host::new(&db, &table);
    let soft = ["--deleted-column", "deleted_at"];

    let first = host.once(&soft).await;
    assert_each_once(&first, 1..=4);
    let ops: Vec<(i64, &str)> = first.iter().map(|l| (l.id(), l.op.as_str())).collect();
    assert_eq!(
        ops,
        [(1, "upsert"), (2, "delete"), (3, "upsert"), (4, "upsert")],
        "ops of the first sync"
    );

    db.execute(&format!(
        "UPDATE {table} SET deleted_at = {t}, updated_at = {t} WHERE id = 4",
        t = db.lit(&Val::Ts(at(600)))
    ))
    .await;
    let second = host.once(&soft).await;
    let ops: Vec<(i64, &str)> = second.iter().map(|l| (l.id(), l.op.as_str())).collect();
    assert_eq!(ops, [(4, "delete")], "the run after row 4 was soft-deleted");

    db.execute(&format!(
        "UPDATE {table} SET deleted_at = NULL, name = 'restored', updated_at = {} WHERE id = 2",
        db.lit(&Val::Ts(at(700)))
    ))
    .await;
    let third = host.once(&soft).await;
    let ops: Vec<(i64, &str)> = third.iter().map(|l| (l.id(), l.op.as_str())).collect();
    assert_eq!(ops, [(2, "upsert")], "the run after row 2 was restored");
    assert_eq!(third[0].name(), "restored");
}

/// A `users` table with one more column, `extra`, and a user for each `(id, extra's value)`
/// of `rows`, stamped `at(id)`.
async fn users_and(
    db: &TestDb,
    extra: (&str, Col),
    rows: impl IntoIterator<Item = (i64, Val)>,
) -> String {
    let columns = [crate::support::db::USERS, &[extra]].concat();
    let table = db.create_table("users", &columns).await;
    let rows: Vec<Vec<Val>> = rows
        .into_iter()
        .map(|(id, value)| {
            let mut row = crate::support::db::user_values(id, Val::Ts(at(id)));
            row.push(value);
            row
        })
        .collect();
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    db.insert(&table, &names, &rows).await;
    table
}

/// A `users` table whose cursor column is nullable: rows 1..=3 stamped, 4 and 5 NULL.
pub(super) async fn users_with_null_cursors(backend: Backend) -> Option<(TestDb, String, Host)> {
    let db = TestDb::new(backend).await?;
    let table = db
        .create_table(
            "users",
            &[
                ("id", Col::Key),
                ("email", Col::Text),
                ("name", Col::Text),
                ("updated_at", Col::NullableStamp),
            ],
        )
        .await;
    db.insert_users(
        &table,
        [
            (1, Val::Ts(at(1))),
            (2, Val::Ts(at(2))),
            (3, Val::Ts(at(3))),
            (4, Val::Null),
            (5, Val::Null),
        ],
    )
    .await;
    let host = Host::new(&db, &table);
    Some((db, table, host))
}

/// With `--null-cursor oldest`, a first sync delivers the rows whose cursor is NULL first
/// (in key order), then the rest; a row given a cursor later is delivered again.
pub(super) async fn null_cursor_oldest_delivers_null_rows_first(backend: Backend) {
    let Some((db, table, mut host)) = users_with_null_cursors(backend).await else {
        return;
    };
    let oldest = ["--null-cursor", "oldest", "--batch-size", "2"];

    let lines = host.once(&oldest).await;

    assert_eq!(
        ids(&lines),
        [4, 5, 1, 2, 3],
        "NULL cursors first, in key order"
    );
    assert_eq!(lines[0].updated_at(), None);
    assert_eq!(lines[1].updated_at(), None);
    assert_eq!(
        lines[2].updated_at(),
        Some(db.rendered_stamp(at(1)).as_str())
    );
    assert!(
        host.once(&oldest).await.is_empty(),
        "a second run delivered rows"
    );

    db.execute(&format!(
        "UPDATE {table} SET updated_at = {} WHERE id = 4",
        db.lit(&Val::Ts(at(100)))
    ))
    .await;
    let later = host.once(&oldest).await;
    assert_eq!(ids(&later), [4], "the run after row 4 got a cursor");
}

/// NULLs in the cursor column: `host run` refuses with exit 2, names the column and the
/// flag, and delivers nothing; run again as the message says, with `--null-cursor oldest`,
/// it delivers every row, the NULL ones first. (The refused run must not have left the
/// pipeline past the NULL rows.)
pub(super) async fn null_cursor_refused_with_exit_2_then_oldest_delivers_all(backend: Backend) {
    let Some((_db, _table, mut host)) = users_with_null_cursors(backend).await else {
        return;
    };

    let mut args = host.run_args(&[]);
    args.push("--once".to_owned());
    let refused = host.exec(&args).await;
    assert_eq!(
        refused.code(),
        Some(2),
        "NULL cursors without --null-cursor: {refused}"
    );
    assert!(
        refused.stderr.contains("updated_at"),
        "the error must name the column: {refused}"
    );
    assert!(
        refused.stderr.contains("--null-cursor"),
        "the error must name the flag that fixes it: {refused}"
    );
    assert!(host.new_lines().is_empty(), "a refused run delivered rows");

    let lines = host.once(&["--null-cursor", "oldest"]).await;
    assert_eq!(
        ids(&lines),
        [4, 5, 1, 2, 3],
        "the run with --null-cursor oldest after a refused run"
    );
}

/// A column the host reads, dropped while `host run` polls: no row ever arrives with the
/// column's name for its value (see [`column_vanishes_while_polling`]).
pub(super) async fn a_dropped_column_is_never_delivered_as_its_name(backend: Backend) {
    column_vanishes_while_polling(backend, "score", "DROP COLUMN score").await;
}

/// The same for a column renamed while `host run` polls.
pub(super) async fn a_renamed_column_is_never_delivered_as_its_name(backend: Backend) {
    column_vanishes_while_polling(backend, "email", "RENAME COLUMN email TO contact").await;
}

/// `host run` polls a table and delivers its rows; then `change` takes `column` away and rows
/// are written. SQLite used to read the double-quoted name of a column that is gone as a
/// string, and delivered `"score":"score"` in every later row (issue 24). No value delivered
/// may be a column's name: the polling host stops with an error that names the column (and a
/// non-zero exit), or goes on delivering the rows; either way its watermark passed no row it
/// did not deliver, so a host started again delivers every row written since the change.
async fn column_vanishes_while_polling(backend: Backend, column: &str, change: &str) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let score = |id| Val::Text(format!("s{id}"));
    let table = users_and(&db, ("score", Col::Text), (1..=3).map(|id| (id, score(id)))).await;
    let mut host = Host::new(&db, &table);
    let mut running = host.spawn(&["--poll", "100ms"], None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids(&host.all_lines()).len() < 3 {
        if let Some(outcome) = running.try_finish() {
            panic!("host exited before it delivered the first rows: {outcome}");
        }
        assert!(
            Instant::now() < deadline,
            "rows 1..=3 not delivered in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    db.execute(&format!("ALTER TABLE {table} {change}")).await;
    let written: Vec<Vec<Val>> = (4..=6)
        .map(|id| {
            vec![
                Val::Int(id),
                Val::Text(format!("user {id}")),
                Val::Ts(at(10 + id)),
            ]
        })
        .collect();
    db.insert(&table, &["id", "name", "updated_at"], &written)
        .await;
    db.execute(&format!(
        "UPDATE {table} SET name = 'changed', updated_at = {} WHERE id = 1",
        db.lit(&Val::Ts(at(100)))
    ))
    .await;
    let later = [1, 4, 5, 6];
    let deadline = Instant::now() + Duration::from_secs(15);
    let stopped = loop {
        if let Some(outcome) = running.try_finish() {
            break Some(outcome);
        }
        let delivered = ids(&host.all_lines()[3..]);
        if later.iter().all(|id| delivered.contains(id)) {
            break None;
        }
        assert!(
            Instant::now() < deadline,
            "the host neither stopped nor delivered rows {later:?} within 15 s of `{change}`; \
             stderr:\n{}",
            running.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_no_value_is_a_column_name(&host.all_lines(), change);
    match stopped {
        Some(outcome) => {
            assert!(
                !outcome.success(),
                "the host stopped with exit 0: {outcome}"
            );
            assert_mentions(error_report(&outcome), "the error", &[column]);
        }
        None => {
            let outcome = running.terminate().await;
            assert!(outcome.success(), "host must exit 0 on SIGTERM: {outcome}");
        }
    }

    host.once(&[]).await;
    let lines = host.all_lines();
    assert_no_value_is_a_column_name(&lines, change);
    let since: Vec<&Line> = lines[3..].iter().collect();
    for id in later {
        let last = since.iter().rev().find(|line| line.id() == id);
        let name = if id == 1 {
            "changed".to_owned()
        } else {
            format!("user {id}")
        };
        assert_eq!(
            last.map(|line| line.name()),
            Some(name.as_str()),
            "row {id} written after `{change}`, in the lines since: {since:?}"
        );
    }
}

/// No delivered value is the name of a column the table had or has.
fn assert_no_value_is_a_column_name(lines: &[Line], change: &str) {
    const NAMES: [&str; 6] = ["id", "email", "name", "score", "updated_at", "contact"];
    let named: Vec<&Line> = lines
        .iter()
        .filter(|line| {
            line.row
                .values()
                .any(|value| value.as_str().is_some_and(|text| NAMES.contains(&text)))
        })
        .collect();
    assert!(
        named.is_empty(),
        "after `{change}`, rows delivered with a column's name for a value: {named:?}"
    );
}
