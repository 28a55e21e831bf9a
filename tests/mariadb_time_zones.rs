//! MariaDB cursors written from sessions whose `time_zone` is not UTC.
//!
//! A TIMESTAMP is an instant: MariaDB converts it from the writing session's zone, so the
//! host must deliver it (and order it) in UTC, with `Z`, whatever zone wrote it. A DATETIME
//! is a wall-clock value: stored and delivered as written, without `Z`, ordered as written.
//! Two sessions write interleaved values with microseconds, ties larger than a batch, and
//! (for TIMESTAMP) a tie of rows written from both zones at the same instant.

use chrono::NaiveDateTime;
use sqlx::Row;

use crate::support::lines::{assert_each_once, assert_in_cursor_order, ids};
use crate::support::{day, Backend, Col, Host, TestDb, Val};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Timestamp,
    Datetime,
}

/// A row as written: its id, the wall-clock value in the writing session, and that
/// session's offset from UTC in minutes.
#[derive(Debug, Clone, Copy)]
struct Written {
    id: i64,
    local: NaiveDateTime,
    offset_minutes: i64,
}

const EAST: (&str, i64) = ("+05:30", 330);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp6_written_from_two_zones_is_delivered_once_in_utc() {
    written_from_two_zones(Kind::Timestamp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datetime6_written_from_two_zones_is_delivered_once_as_written() {
    written_from_two_zones(Kind::Datetime).await;
}

fn micros(base: NaiveDateTime, n: i64) -> NaiveDateTime {
    base + chrono::Duration::microseconds(n)
}

/// How the host must render `row`'s cursor.
fn rendered(kind: Kind, row: &Written) -> String {
    match kind {
        Kind::Timestamp => (row.local - chrono::Duration::minutes(row.offset_minutes))
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string(),
        Kind::Datetime => row.local.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
    }
}

async fn written_from_two_zones(kind: Kind) {
    let Some(db) = TestDb::new(Backend::MariaDb).await else {
        return;
    };
    let (name, cursor_type) = match kind {
        Kind::Timestamp => ("ts_events", Col::Stamp),
        Kind::Datetime => ("dt_events", Col::Datetime),
    };
    let table = db
        .create_table(
            name,
            &[
                ("id", Col::Key),
                ("email", Col::Text),
                ("name", Col::Text),
                ("updated_at", cursor_type),
            ],
        )
        .await;
    // Los Angeles is at -08:00 in January; without the server's zone tables, the offset.
    let west = if db.has_named_time_zones().await {
        ("America/Los_Angeles", -480)
    } else {
        ("-08:00", -480)
    };

    // East: 12:00 at +05:30 is 06:30 UTC. Six rows two microseconds apart, a tie of nine,
    // and the two sides of a second boundary.
    let east_noon = day(2024, 1, 15) + chrono::Duration::hours(12);
    let mut east: Vec<Written> = (1..=6)
        .map(|id| Written {
            id,
            local: micros(east_noon, 2 * id),
            offset_minutes: EAST.1,
        })
        .collect();
    east.extend((7..=15).map(|id| Written {
        id,
        local: micros(east_noon, 500_000),
        offset_minutes: EAST.1,
    }));
    east.push(Written {
        id: 16,
        local: micros(east_noon, 999_999),
        offset_minutes: EAST.1,
    });
    east.push(Written {
        id: 17,
        local: micros(east_noon, 1_000_000),
        offset_minutes: EAST.1,
    });
    // West: 22:30 the day before at -08:00 is the same 06:30 UTC. Odd microseconds fall
    // between the east rows; a tie of four at the east tie's instant.
    let west_evening = day(2024, 1, 14) + chrono::Duration::minutes(22 * 60 + 30);
    let mut west_rows: Vec<Written> = (101..=106)
        .map(|id| Written {
            id,
            local: micros(west_evening, 2 * (id - 100) + 1),
            offset_minutes: west.1,
        })
        .collect();
    west_rows.extend((107..=110).map(|id| Written {
        id,
        local: micros(west_evening, 500_000),
        offset_minutes: west.1,
    }));

    write_in_zone(&db, &table, EAST.0, &east).await;
    write_in_zone(&db, &table, west.0, &west_rows).await;
    let all: Vec<Written> = east.iter().chain(&west_rows).copied().collect();
    check_stored_in_utc(&db, &table, kind, &all).await;

    let mut host = Host::new(&db, &table);
    let lines = host.once(&["--batch-size", "4"]).await;

    assert_each_once(&lines, all.iter().map(|row| row.id));
    assert_in_cursor_order(&lines);
    let mut expected_order: Vec<(String, i64)> = all
        .iter()
        .map(|row| (rendered(kind, row), row.id))
        .collect();
    expected_order.sort();
    assert_eq!(
        ids(&lines),
        expected_order.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        "delivery order ({kind:?} cursors written at {} and {})",
        EAST.0,
        west.0
    );
    for line in &lines {
        let row = all
            .iter()
            .find(|row| row.id == line.id())
            .expect("known id");
        assert_eq!(
            line.updated_at(),
            Some(rendered(kind, row).as_str()),
            "cursor of row {} written as {} at {}",
            row.id,
            row.local,
            if row.offset_minutes == EAST.1 {
                EAST.0
            } else {
                west.0
            }
        );
    }
    let again = host.once(&["--batch-size", "4"]).await;
    assert!(
        again.is_empty(),
        "a run with nothing new delivered {again:?}"
    );

    let update = Written {
        id: 3,
        local: micros(east_noon + chrono::Duration::hours(1), 7),
        offset_minutes: EAST.1,
    };
    let mut session = db.session().await;
    for sql in [
        format!("SET time_zone = '{}'", EAST.0),
        format!(
            "UPDATE {table} SET name = 'updated', updated_at = {} WHERE id = 3",
            db.lit(&Val::Ts(update.local))
        ),
    ] {
        sqlx::raw_sql(&sql)
            .execute(&mut session)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }
    let updated = host.once(&["--batch-size", "4"]).await;
    assert_eq!(ids(&updated), [3], "the run after an update at {}", EAST.0);
    assert_eq!(updated[0].name(), "updated");
    assert_eq!(
        updated[0].updated_at(),
        Some(rendered(kind, &update).as_str())
    );
    let again = host.once(&["--batch-size", "4"]).await;
    assert!(
        again.is_empty(),
        "a run with nothing new delivered {again:?}"
    );
}

/// Inserts `rows` from a session whose `time_zone` is `zone`.
async fn write_in_zone(db: &TestDb, table: &str, zone: &str, rows: &[Written]) {
    let mut session = db.session().await;
    let values: Vec<Vec<Val>> = rows
        .iter()
        .map(|row| crate::support::db::user_values(row.id, Val::Ts(row.local)))
        .collect();
    let mut statements = vec![format!("SET time_zone = '{zone}'")];
    statements.extend(crate::support::db::insert_statements(
        Backend::MariaDb,
        table,
        crate::support::db::USERS_COLUMNS,
        &values,
    ));
    for sql in statements {
        sqlx::raw_sql(&sql)
            .execute(&mut session)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }
}

/// The harness's own check: read back from a UTC session, TIMESTAMP values are the UTC
/// instants computed here and DATETIME values are as written, so the expectations above
/// describe what is really stored.
async fn check_stored_in_utc(db: &TestDb, table: &str, kind: Kind, rows: &[Written]) {
    let sql = format!(
        "SELECT id, DATE_FORMAT(updated_at, '%Y-%m-%dT%H:%i:%s.%f') FROM {table} ORDER BY id"
    );
    let mut session = db.session().await;
    sqlx::raw_sql("SET time_zone = '+00:00'")
        .execute(&mut session)
        .await
        .expect("set time_zone");
    let stored = sqlx::raw_sql(&sql)
        .fetch_all(&mut session)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
    for record in stored {
        let id: i64 = record.try_get(0).expect("id");
        let text: String = record.try_get(1).expect("formatted cursor");
        let row = rows.iter().find(|row| row.id == id).expect("known id");
        let expected = rendered(kind, row);
        assert_eq!(
            text,
            expected.trim_end_matches('Z'),
            "stored value of row {id} (harness check)"
        );
    }
}
