//! Columns with a meaning of their own: a soft-delete column, and a cursor column that may
//! be NULL.

use crate::support::lines::{assert_each_once, ids};
use crate::support::{at, Backend, Col, Host, TestDb, Val};

/// With `--deleted-column deleted_at`, rows whose `deleted_at` is set come out as deletes,
/// on the first sync and when soft-deleted later; clearing it makes the row an upsert again.
pub(super) async fn soft_deletes_are_delivered_as_deletes(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let table = db
        .create_table(
            "users",
            &[
                ("id", Col::Key),
                ("email", Col::Text),
                ("name", Col::Text),
                ("updated_at", Col::Stamp),
                ("deleted_at", Col::NullableStamp),
            ],
        )
        .await;
    let mut host = Host::new(&db, &table);
    let rows: Vec<Vec<Val>> = (1..=4)
        .map(|id| {
            let deleted = if id == 2 { Val::Ts(at(500)) } else { Val::Null };
            let mut row = crate::support::db::user_values(id, Val::Ts(at(id)));
            row.push(deleted);
            row
        })
        .collect();
    db.insert(
        &table,
        &["id", "email", "name", "updated_at", "deleted_at"],
        &rows,
    )
    .await;
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
