//! What reading by `(cursor, key)` keyset promises beyond the post: ties larger than a batch,
//! microseconds kept to the digit, rows left to settle, and rows of transactions still open
//! when a run passes.

use std::time::{Duration, Instant};

use sqlx::Connection;

use super::users;
use crate::support::lines::{
    assert_batches_at_most, assert_each_at_least_once, assert_each_once, assert_in_cursor_order,
    batches, ids, Line,
};
use crate::support::{at, ts, Backend, Val};

/// 2,000 rows on one timestamp, read 7 at a time: the key alone moves the watermark through
/// 286 batches, and every row comes out exactly once, in key order.
pub(super) async fn tie_of_2000_rows_across_batches_of_7_exactly_once(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    db.insert_users(&table, (1..=2_000).map(|id| (id, Val::Ts(at(42)))))
        .await;

    let lines = host.once(&["--batch-size", "7"]).await;

    assert_each_once(&lines, 1..=2_000);
    assert_in_cursor_order(&lines);
    assert_batches_at_most(&lines, 7);
    assert_eq!(batches(&lines).len(), 286, "batches of 7 over 2,000 rows");
    let again = host.once(&["--batch-size", "7"]).await;
    assert!(
        again.is_empty(),
        "a run with nothing new delivered {} lines",
        again.len()
    );
}

/// 200 timestamps one microsecond apart, across a day (and leap day) boundary and batch
/// boundaries: each row once, with its exact microseconds (`.000000` included).
pub(super) async fn timestamps_one_microsecond_apart_keep_their_microseconds(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    let start = ts("2024-02-29 23:59:59.999900");
    let stamp = |id: i64| start + chrono::Duration::microseconds(id - 1);
    db.insert_users(&table, (1..=200).map(|id| (id, Val::Ts(stamp(id)))))
        .await;

    let lines = host.once(&["--batch-size", "16"]).await;

    assert_each_once(&lines, 1..=200);
    assert_in_cursor_order(&lines);
    for line in &lines {
        assert_eq!(
            line.updated_at(),
            Some(db.rendered_stamp(stamp(line.id())).as_str()),
            "updated_at of row {}",
            line.id()
        );
    }
    let midnight = lines
        .iter()
        .find(|line| line.id() == 101)
        .and_then(Line::updated_at);
    let expected = match backend {
        Backend::Sqlite => "2024-03-01 00:00:00.000000",
        _ => "2024-03-01T00:00:00.000000Z",
    };
    assert_eq!(midnight, Some(expected), "the row stamped at midnight");
}

/// A row stamped with the database's now is left alone by a run with `--settle 3s`, which
/// still delivers an old row, and delivered by a run once the 3 s have passed.
pub(super) async fn settle_leaves_fresh_rows_for_a_later_run(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    db.insert_users(&table, [(1, Val::Ts(at(1)))]).await;
    db.insert_users(&table, [(2, Val::Now)]).await;
    let stamped = Instant::now();

    let first = host.once(&["--settle", "3s"]).await;
    assert!(
        stamped.elapsed() < Duration::from_secs(3),
        "the first run took too long for the test to mean anything"
    );
    assert_eq!(
        ids(&first),
        [1],
        "a run with --settle 3s right after row 2 was stamped now"
    );

    tokio::time::sleep_until((stamped + Duration::from_millis(3_500)).into()).await;
    let second = host.once(&["--settle", "3s"]).await;
    assert_eq!(ids(&second), [2], "a run 3.5 s after row 2 was stamped");
}

/// A row inserted, stamped with the database's now, by a transaction that stays open while
/// later rows commit and a run happens: the run must not go past it, and once committed the
/// next run delivers it. Every row at least once (a host may re-read what it held back).
pub(super) async fn row_of_transaction_open_during_a_run_is_delivered_after_commit(
    backend: Backend,
) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    let mut session = db.session().await;
    let mut held = session.begin().await.expect("begin");
    let insert = |id: i64| {
        crate::support::db::insert_statements(
            backend,
            &table,
            crate::support::db::USERS_COLUMNS,
            &[crate::support::db::user_values(id, Val::Now)],
        )
        .remove(0)
    };
    sqlx::raw_sql(&insert(1))
        .execute(&mut *held)
        .await
        .expect("insert in the held transaction");
    tokio::time::sleep(Duration::from_millis(50)).await;
    for id in 2..=4 {
        db.execute(&insert(id)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The host reads MariaDB at least 1 s behind its clock whatever --settle says (a
    // statement takes NOW() before InnoDB lists its transaction): past that, only the open
    // transaction holds rows 2..=4 back, which is what this scenario is about.
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let first = host.once(&[]).await;
    assert!(
        !ids(&first).contains(&1),
        "an uncommitted row was delivered: {first:?}"
    );
    held.commit().await.expect("commit");
    // MariaDB lists transactions (information_schema.innodb_trx) from a cache refreshed at
    // most every 100 ms: right after the commit it may still show this one as open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = host.once(&[]).await;

    assert!(
        ids(&second).contains(&1),
        "the row of the transaction held open during the first run was never delivered; \
         first run {:?}, second run {:?}",
        ids(&first),
        ids(&second)
    );
    let all = [first, second].concat();
    assert_each_at_least_once(&all, 1..=4);
}
