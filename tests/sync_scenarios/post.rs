//! The six scenarios of "Building a Sync Engine": a first sync, an update, a row tied with
//! the last one delivered, rows added and rows changed while a batch is processed, and a large
//! table read in batches.

use serde_json::Value;

use super::{expected_user, users};
use crate::support::lines::{
    assert_batches_at_most, assert_each_once, assert_in_cursor_order, batches, ids, Line,
};
use crate::support::{at, Backend, Val};

/// Scenario 1: the first run delivers every row once, whole, as an upsert, in `(cursor, key)` order
/// (here the reverse of key order) and in batches of `--batch-size`; a second run delivers nothing.
pub(super) async fn first_sync_delivers_every_row_once(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    let stamp = |id: i64| at(100 - id);
    db.insert_users(&table, (1..=10).map(|id| (id, Val::Ts(stamp(id)))))
        .await;

    let lines = host.once(&["--batch-size", "4"]).await;

    let rows: Vec<Value> = lines
        .iter()
        .map(|line| Value::Object(line.row.clone()))
        .collect();
    let expected: Vec<Value> = (1..=10)
        .rev()
        .map(|id| expected_user(&db, id, stamp(id)))
        .collect();
    assert_eq!(rows, expected, "rows delivered by the first sync");
    for line in &lines {
        assert_eq!(line.op, "upsert", "op of {line:?}");
    }
    let sizes: Vec<usize> = batches(&lines).iter().map(|(_, ids)| ids.len()).collect();
    assert_eq!(
        sizes,
        [4, 4, 2],
        "batch sizes with --batch-size 4 over 10 rows"
    );
    assert_batches_at_most(&lines, 4);

    let again = host.once(&["--batch-size", "4"]).await;
    assert!(
        again.is_empty(),
        "a run with nothing new delivered {again:?}"
    );
}

/// Scenario 2: after a sync, an update is delivered by the next run, and nothing else is.
pub(super) async fn update_is_delivered_by_next_run(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    db.insert_users(&table, (1..=5).map(|id| (id, Val::Ts(at(id)))))
        .await;
    let first = host.once(&[]).await;
    assert_each_once(&first, 1..=5);

    db.execute(&format!(
        "UPDATE {table} SET name = 'renamed', updated_at = {} WHERE id = 3",
        db.lit(&Val::Ts(at(1_000)))
    ))
    .await;
    let second = host.once(&[]).await;

    assert_eq!(
        ids(&second),
        [3],
        "the run after an update delivered {second:?}"
    );
    assert_eq!(second[0].name(), "renamed");
    assert_eq!(
        second[0].updated_at(),
        Some(db.rendered_stamp(at(1_000)).as_str())
    );
    let third = host.once(&[]).await;
    assert!(
        third.is_empty(),
        "a run with nothing new delivered {third:?}"
    );
}

/// Scenario 3: a row added just after a run, with the same cursor as the last row that run
/// delivered (and a larger key, as a new row gets), is delivered by the next run: the watermark is
/// `(cursor, key)`, not the cursor alone.
pub(super) async fn row_tied_with_last_delivered_row_is_delivered_by_next_run(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    db.insert_users(&table, (1..=5).map(|id| (id, Val::Ts(at(id * 10)))))
        .await;
    let first = host.once(&[]).await;
    assert_eq!(ids(&first), [1, 2, 3, 4, 5]);

    db.insert_users(&table, [(6, Val::Ts(at(50)))]).await;
    let second = host.once(&[]).await;

    assert_eq!(
        ids(&second),
        [6],
        "a row tied with the last delivered one; the run after it delivered {second:?}"
    );
}

/// Scenario 4: rows inserted while a batch is being processed (the host stopped at `after_read` of
/// its first batch) are delivered by that run or the next, each once; one of them lands between
/// rows not read yet, two after all of them.
pub(super) async fn rows_added_during_a_batch_are_delivered(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    db.insert_users(&table, (1..=10).map(|id| (id, Val::Ts(at(id * 10)))))
        .await;

    let mut running = host.spawn(&["--once", "--batch-size", "3"], Some("after_read=wait@1"));
    running.reached("after_read", 1).await;
    db.insert_users(
        &table,
        [
            (11, Val::Ts(at(65))),
            (12, Val::Ts(at(200))),
            (13, Val::Ts(at(201))),
        ],
    )
    .await;
    running.go("after_read", 1);
    let outcome = running.finish().await;
    assert!(outcome.success(), "host run with a failpoint: {outcome}");
    let first = host.new_lines();
    let second = host.once(&["--batch-size", "3"]).await;

    assert_eq!(
        batches(&first).first().map(|(_, ids)| ids.clone()),
        Some(vec![1, 2, 3]),
        "the batch read before the inserts"
    );
    assert_in_cursor_order(&first);
    assert_in_cursor_order(&second);
    let all = [first, second].concat();
    assert_each_once(&all, 1..=13);
}

/// Scenario 5: 5,000 rows (cursor values tied five by five, not in key order) in batches of 100:
/// each exactly once, in `(cursor, key)` order, in 50 batches with distinct ids.
pub(super) async fn five_thousand_rows_exactly_once_in_cursor_order(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    db.insert_users(
        &table,
        (1..=5_000).map(|id| (id, Val::Ts(at((id * 7_919) % 1_000)))),
    )
    .await;

    let lines = host.once(&["--batch-size", "100"]).await;

    assert_eq!(lines.len(), 5_000, "lines delivered for 5,000 rows");
    assert_each_once(&lines, 1..=5_000);
    assert_in_cursor_order(&lines);
    assert_batches_at_most(&lines, 100);
    assert_eq!(batches(&lines).len(), 50, "batches of 100 over 5,000 rows");
    for line in &lines {
        let id = line.id();
        assert_eq!(
            line.updated_at(),
            Some(db.rendered_stamp(at((id * 7_919) % 1_000)).as_str()),
            "updated_at of row {id}"
        );
    }
    let again = host.once(&["--batch-size", "100"]).await;
    assert!(
        again.is_empty(),
        "a run with nothing new delivered {} lines",
        again.len()
    );
}

/// Scenario 6: a row of the first batch updated after that batch was read (at `after_read`) is
/// delivered again, in its new version, by the end of the next run; every other row once.
pub(super) async fn row_changed_during_its_batch_is_delivered_again(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    db.insert_users(&table, (1..=10).map(|id| (id, Val::Ts(at(id)))))
        .await;

    let mut running = host.spawn(&["--once", "--batch-size", "3"], Some("after_read=wait@1"));
    running.reached("after_read", 1).await;
    db.execute(&format!(
        "UPDATE {table} SET name = 'changed during its batch', updated_at = {} WHERE id = 2",
        db.lit(&Val::Ts(at(1_000)))
    ))
    .await;
    running.go("after_read", 1);
    let outcome = running.finish().await;
    assert!(outcome.success(), "host run with a failpoint: {outcome}");
    host.once(&["--batch-size", "3"]).await;
    let all = host.all_lines();

    let row2: Vec<&Line> = all.iter().filter(|line| line.id() == 2).collect();
    assert_eq!(
        row2.len(),
        2,
        "row 2, read then updated, delivered as {row2:?}"
    );
    assert_eq!(row2[0].name(), "user 2", "row 2 as first read");
    assert_eq!(
        row2[1].name(),
        "changed during its batch",
        "row 2's new version"
    );
    assert_eq!(
        row2[1].updated_at(),
        Some(db.rendered_stamp(at(1_000)).as_str())
    );
    let others: Vec<Line> = all.into_iter().filter(|line| line.id() != 2).collect();
    assert_each_once(&others, (1..=10).filter(|id| *id != 2));
}
