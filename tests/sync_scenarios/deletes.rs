//! Hard deletes (`--detect-deletes`, issue 14): rows removed with `DELETE` reach the output as
//! `{"op":"delete","row":{KEY: …}}`, each once, and never after a newer version of their row.
//!
//! Each scenario replays the output on a model of the destination (upserts set a key,
//! deletes remove it, in output order) and compares it with the table.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::users;
use crate::support::lines::{batches, Line};
use crate::support::workers::ScratchDb;
use crate::support::{at, Backend, Host, TestDb, Val};

/// Checks on every run: a check at the end of each pass.
const CHECK: &[&str] = &["--detect-deletes", "0s"];

fn with_check<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    [CHECK, extra].concat()
}

/// The key column's value of a line, as JSON text.
fn key(line: &Line, column: &str) -> String {
    match line.row.get(column) {
        Some(value) => value.to_string(),
        None => panic!("line without {column:?}: {line:?}"),
    }
}

/// The keys of the deletes among `lines`, in order.
fn deleted(lines: &[Line], column: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|line| line.op == "delete")
        .map(|line| key(line, column))
        .collect()
}

fn upserted(lines: &[Line], column: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|line| line.op == "upsert")
        .map(|line| key(line, column))
        .collect()
}

/// The destination after `lines`, applied in order: the keys present.
fn destination(lines: &[Line], column: &str) -> BTreeSet<String> {
    let mut present = BTreeSet::new();
    for line in lines {
        match line.op.as_str() {
            "upsert" => present.insert(key(line, column)),
            "delete" => {
                assert_eq!(
                    line.row.len(),
                    1,
                    "a detected delete carries the key column alone: {line:?}"
                );
                present.remove(&key(line, column))
            }
            other => panic!("unknown op {other:?}"),
        };
    }
    present
}

fn id_keys(ids: impl IntoIterator<Item = i64>) -> BTreeSet<String> {
    ids.into_iter().map(|id| id.to_string()).collect()
}

async fn table_ids(db: &TestDb, table: &str) -> BTreeSet<String> {
    id_keys(db.names(table).await.into_keys())
}

/// Single rows, a range, the first and the last key, then every row: each deleted key comes
/// once as a delete, and no row that was left alone comes again.
pub(super) async fn hard_deletes_arrive_once_each_and_nothing_else_comes_again(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    deletes_arrive_once_each(&db, &table, &mut host).await;
}

/// The same with the state, and so the inventory, in a PostgreSQL state store
/// (`--state postgres://…`), then the inventory of a pipeline that synced without it built
/// there from the table.
pub(super) async fn hard_deletes_with_a_postgres_state_store(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    let Some(pg) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let state = ScratchDb::new(&pg, "tm_deletes_state").await;
    host.set_state(state.url());
    deletes_arrive_once_each(&db, &table, &mut host).await;

    let mut enabled = Host::new(&db, &table);
    enabled.set_state(state.url());
    let args = ["--pipeline", "enabled", "--batch-size", "1000"];
    db.insert_users(&table, (5001..=7500).map(|id| (id, Val::Ts(at(id)))))
        .await;
    assert_eq!(enabled.once(&args).await.len(), 2500);
    let checked: Vec<&str> = [CHECK, &args[..]].concat();
    assert!(
        enabled.once(&checked).await.is_empty(),
        "the inventory is built without delivering anything"
    );
    db.execute(&format!(
        "DELETE FROM {table} WHERE id IN (5001, 6000, 7500)"
    ))
    .await;
    let mut got = deleted(&enabled.once(&checked).await, "id");
    got.sort();
    assert_eq!(got, ["5001", "6000", "7500"]);
}

/// Deletes of single rows, a range, the first and last keys, then every row, checked on
/// `host` (which reads `table` of `db`, empty).
async fn deletes_arrive_once_each(db: &TestDb, table: &str, host: &mut Host) {
    // Enough keys for several ranges of digests.
    db.insert_users(table, (1..=3000).map(|id| (id, Val::Ts(at(id)))))
        .await;
    let first = host.once(&with_check(&["--batch-size", "500"])).await;
    assert_eq!(first.len(), 3000, "the first run delivers every row once");
    assert!(deleted(&first, "id").is_empty(), "nothing was deleted yet");

    db.execute(&format!(
        "DELETE FROM {table} WHERE id IN (1, 1500, 3000) OR id BETWEEN 2000 AND 2099"
    ))
    .await;
    let second = host.once(&with_check(&["--batch-size", "40"])).await;
    let mut expected: Vec<String> = [1, 1500, 3000]
        .into_iter()
        .chain(2000..=2099)
        .map(|id| id.to_string())
        .collect();
    expected.sort();
    let mut got = deleted(&second, "id");
    got.sort();
    assert_eq!(got, expected, "each deleted key once, as a delete");
    assert!(
        upserted(&second, "id").is_empty(),
        "rows left alone are not delivered again: {:?}",
        upserted(&second, "id")
    );
    for (_, ids) in batches(&second) {
        assert!(ids.len() <= 40, "delete batches keep --batch-size");
    }
    let status = host.status_json().await;
    assert_eq!(status[0]["deletes_detected"], 103, "{status:?}");
    assert!(status[0]["last_delete_check_ranges"].as_i64() >= Some(1));
    assert!(status[0]["last_delete_check_seconds"].as_f64().is_some());

    assert!(
        host.once(CHECK).await.is_empty(),
        "a check that finds nothing delivers nothing"
    );
    db.execute(&format!("DELETE FROM {table}")).await;
    let last = host.once(CHECK).await;
    let got: BTreeSet<String> = deleted(&last, "id").into_iter().collect();
    assert_eq!(got.len(), last.len(), "each key once: {}", last.len());
    assert_eq!(got.len(), 3000 - 103);
    let all = [first, second, last].concat();
    assert!(
        destination(&all, "id").is_empty(),
        "the destination ends empty"
    );
}

/// `char(n)` keys: PostgreSQL pads them with blanks (COPY, and so the rows, carry them),
/// MariaDB trims them. Either way the table's keys match the rows' — kept by checkpoints and
/// built from the table for a pipeline that synced without checks —, a check that finds
/// nothing reads no range key by key, and a deleted key comes as its rows carried it.
pub(super) async fn char_keys_match_the_rows_they_came_with(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let stamp = backend.column_sql(crate::support::Col::Stamp);
    let codes = db.table("codes");
    db.execute(&format!(
        "CREATE TABLE {codes} (code CHAR(8) NOT NULL PRIMARY KEY, updated_at {stamp})"
    ))
    .await;
    // Some codes shorter than 8, one with a tab (sorts before a blank), one full length.
    let mut names: Vec<String> = (0..1500).map(|n| format!("k{n}")).collect();
    names.extend(["k1\tx".to_owned(), "abcdefgh".to_owned()]);
    let rows: Vec<Vec<Val>> = names
        .iter()
        .enumerate()
        .map(|(n, code)| vec![Val::Text(code.clone()), Val::Ts(at(n as i64 % 40))])
        .collect();
    db.insert(&codes, &["code", "updated_at"], &rows).await;

    let mut kept = Host::new(&db, &codes);
    let mut built = Host::new(&db, &codes);
    let kept_args = with_check(&["--batch-size", "100"]);
    let first = kept.once(&kept_args).await;
    assert_eq!(first.len(), names.len(), "each row once, no delete");
    assert_eq!(
        built.once(&["--batch-size", "100"]).await.len(),
        names.len()
    );
    for host in [&mut kept, &mut built] {
        assert!(
            host.once(&with_check(&["--batch-size", "100"]))
                .await
                .is_empty(),
            "nothing deleted, nothing delivered"
        );
        let status = host.status_json().await;
        assert_eq!(status[0]["last_delete_check_ranges"], 0, "{status:?}");
    }

    db.execute(&format!(
        "DELETE FROM {codes} WHERE code IN ('k7', 'k1\tx', 'abcdefgh')"
    ))
    .await;
    // As the rows carried them: padded on PostgreSQL, trimmed on MariaDB and SQLite.
    let mut expected: Vec<String> = upserted(&first, "code")
        .into_iter()
        .filter(|code| {
            let code: String = serde_json::from_str(code).unwrap();
            ["k7", "k1\tx", "abcdefgh"].contains(&code.trim_end())
        })
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 3);
    for host in [&mut kept, &mut built] {
        let run = host.once(&with_check(&["--batch-size", "100"])).await;
        let mut got = deleted(&run, "code");
        got.sort();
        assert_eq!(got, expected);
        assert_eq!(run.len(), 3, "the deletes alone");
    }
}

/// A key deleted and inserted again between two checks, and one inserted again while a
/// check is about to deliver its delete: both end present at the destination.
pub(super) async fn a_key_deleted_and_inserted_again_ends_present(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    db.insert_users(&table, (1..=50).map(|id| (id, Val::Ts(at(id)))))
        .await;
    let mut all = host.once(CHECK).await;

    // Between checks.
    db.execute(&format!("DELETE FROM {table} WHERE id = 10"))
        .await;
    db.insert_users(&table, [(10, Val::Ts(at(1_000)))]).await;
    all.extend(host.once(CHECK).await);

    // During a check: found missing, inserted again before its delete is confirmed.
    db.execute(&format!("DELETE FROM {table} WHERE id IN (20, 30)"))
        .await;
    let mut running = host.spawn(
        &with_check(&["--once"]),
        Some("delete_before_confirm=wait@1"),
    );
    running.reached("delete_before_confirm", 1).await;
    db.insert_users(&table, [(20, Val::Ts(at(2_000)))]).await;
    running.go("delete_before_confirm", 1);
    assert!(running.finish().await.success());
    all.extend(host.new_lines());

    // During a check: inserted again just after its delete was confirmed absent.
    db.execute(&format!("DELETE FROM {table} WHERE id = 40"))
        .await;
    let mut running = host.spawn(&with_check(&["--once"]), Some("delete_after_read=wait@1"));
    running.reached("delete_after_read", 1).await;
    db.insert_users(&table, [(40, Val::Ts(at(3_000)))]).await;
    running.go("delete_after_read", 1);
    assert!(running.finish().await.success());
    all.extend(host.once(CHECK).await);
    all.extend(host.once(CHECK).await);

    assert_eq!(
        destination(&all, "id"),
        table_ids(&db, &table).await,
        "the destination holds the table's keys: 10, 20 and 40 present, 30 gone"
    );
    assert_eq!(deleted(&all, "id").iter().filter(|k| *k == "30").count(), 1);
}

/// Text keys on a table whose primary key has two columns, and integer keys far apart.
pub(super) async fn text_and_sparse_keys_are_deleted(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let text = match backend {
        Backend::MariaDb => "VARCHAR(64) NOT NULL",
        _ => "TEXT NOT NULL",
    };
    let stamp = backend.column_sql(crate::support::Col::Stamp);
    let accounts = db.table("accounts");
    db.execute(&format!(
        "CREATE TABLE {accounts} (region {text}, code {text}, slug {text} UNIQUE, \
         updated_at {stamp}, PRIMARY KEY (region, code))"
    ))
    .await;
    let slugs: Vec<String> = (0..300)
        .map(|n| match n % 3 {
            0 => format!("acct-{n:04}"),
            1 => format!("Zoë \"{n}\" o'brien"),
            _ => format!("{n}"),
        })
        .collect();
    let rows: Vec<Vec<Val>> = slugs
        .iter()
        .enumerate()
        .map(|(n, slug)| {
            vec![
                Val::Text(format!("r{}", n % 7)),
                Val::Text(format!("c{n}")),
                Val::Text(slug.clone()),
                Val::Ts(at(n as i64)),
            ]
        })
        .collect();
    db.insert(&accounts, &["region", "code", "slug", "updated_at"], &rows)
        .await;
    let mut host = Host::new(&db, &accounts);
    let mut all = host.once(&with_check(&["--key", "slug"])).await;
    assert_eq!(all.len(), 300);
    db.execute(&format!(
        "DELETE FROM {accounts} WHERE code IN ('c0', 'c1', 'c2', 'c299', 'c150')"
    ))
    .await;
    let run = host.once(&with_check(&["--key", "slug"])).await;
    let mut got = deleted(&run, "slug");
    got.sort();
    let mut expected: Vec<String> = [0, 1, 2, 299, 150]
        .iter()
        .map(|&n| Value::String(slugs[n].clone()).to_string())
        .collect();
    expected.sort();
    assert_eq!(got, expected, "text keys, quotes and accents included");
    assert_eq!(run.len(), 5);
    all.extend(run);
    assert_eq!(destination(&all, "slug").len(), 295);

    // Integer keys far apart, negative ones included.
    let sparse = db.create_table("sparse", crate::support::db::USERS).await;
    let ids = [-7_i64, 1, 2, 1_000, 65_536, 1 << 40, 9_007_199_254_740_993];
    db.insert_users(
        &sparse,
        ids.iter()
            .map(|&id| (id, Val::Ts(at(id.rem_euclid(1_000))))),
    )
    .await;
    let mut host = Host::new(&db, &sparse);
    let mut all = host.once(CHECK).await;
    db.execute(&format!(
        "DELETE FROM {sparse} WHERE id IN (-7, 65536, 9007199254740993)"
    ))
    .await;
    let run = host.once(CHECK).await;
    let mut got = deleted(&run, "id");
    got.sort();
    assert_eq!(got, ["-7", "65536", "9007199254740993"]);
    all.extend(run);
    assert_eq!(destination(&all, "id"), table_ids(&db, &sparse).await);
}

/// `--detect-deletes` given to a pipeline that has synced 10,000 rows without it: the
/// inventory is built from the table, no row comes again, and later deletes are found.
pub(super) async fn enabling_on_a_synced_pipeline_delivers_nothing_again(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    db.insert_users(&table, (1..=10_000).map(|id| (id, Val::Ts(at(id)))))
        .await;
    let first = host.once(&["--batch-size", "1000"]).await;
    assert_eq!(first.len(), 10_000);
    let enabled = host.once(&with_check(&["--batch-size", "1000"])).await;
    assert!(
        enabled.is_empty(),
        "enabling the check delivers nothing again: {} lines",
        enabled.len()
    );
    let status = host.status_json().await;
    assert_eq!(status[0]["key_inventory"], true, "{status:?}");
    db.execute(&format!("DELETE FROM {table} WHERE id IN (1, 5000, 10000)"))
        .await;
    db.insert_users(&table, [(10_001, Val::Ts(at(20_000)))])
        .await;
    let run = host.once(CHECK).await;
    let mut got = deleted(&run, "id");
    got.sort();
    assert_eq!(got, ["1", "10000", "5000"]);
    assert_eq!(upserted(&run, "id"), ["10001"]);
    // Off again: the inventory is dropped, and on again it is rebuilt without delivering.
    assert!(host.once(&[]).await.is_empty());
    assert_eq!(host.status_json().await[0]["key_inventory"], false);
    assert!(host.once(CHECK).await.is_empty());
}

/// kill -9 after a delete batch was delivered but before its checkpoint: the next run
/// delivers it again first, under the same id, and then the rest; no key is lost.
pub(super) async fn kill_9_during_a_delete_batch_redelivers_it_with_its_id(backend: Backend) {
    let Some((db, table, mut host)) = users(backend).await else {
        return;
    };
    db.insert_users(&table, (1..=100).map(|id| (id, Val::Ts(at(id)))))
        .await;
    let synced = host.once(&with_check(&["--batch-size", "10"])).await;
    db.execute(&format!("DELETE FROM {table} WHERE id <= 25"))
        .await;
    let mut running = host.spawn(
        &with_check(&["--once", "--batch-size", "10"]),
        Some("delete_after_deliver=wait@2"),
    );
    running.reached("delete_after_deliver", 2).await;
    running.kill9().await;
    let before = host.new_lines();
    let crashed: Vec<(String, Vec<String>)> = group(&before);
    assert_eq!(
        crashed.len(),
        2,
        "two delete batches before the kill: {crashed:?}"
    );

    let after = host.once(&with_check(&["--batch-size", "10"])).await;
    let resumed = group(&after);
    assert_eq!(
        resumed.first(),
        crashed.last(),
        "the unacknowledged delete batch comes first, same id, same keys"
    );
    let all = [synced, before, after].concat();
    assert_eq!(destination(&all, "id"), id_keys(26..=100));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for key in deleted(&all, "id") {
        *counts.entry(key).or_default() += 1;
    }
    assert_eq!(counts.len(), 25, "every deleted key delivered");
    let twice: BTreeSet<&String> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    let redelivered: BTreeSet<&String> = crashed[1].1.iter().collect();
    assert_eq!(twice, redelivered, "only the unacknowledged batch twice");
}

/// Consecutive delete lines by batch id: `(batch, keys)`.
fn group(lines: &[Line]) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for line in lines.iter().filter(|line| line.op == "delete") {
        match groups.last_mut() {
            Some((batch, keys)) if *batch == line.batch => keys.push(key(line, "id")),
            _ => groups.push((line.batch.clone(), vec![key(line, "id")])),
        }
    }
    groups
}
