//! Hostile tenants, issue 11: what the data, the compile cache and the metrics listener must
//! withstand, each next to a healthy tenant in the same process.
//!
//! - Forged JSON Lines: JSON values with line breaks between their tokens (PostgreSQL `json`
//!   and `jsonb`, MariaDB `JSON`) and a module that returns its rows pretty-printed, with a
//!   line laid out as a `delete`, still give one line per row and no forged line.
//! - The compile cache: a module replaced in place with its size and modification time kept
//!   is compiled again; a cache directory that others may write is refused (exit 2, naming the
//!   directory and the fix); a link planted in the cache is neither loaded nor written
//!   through.
//! - Compile limits: `--max-module-size` and `--compile-timeout` (and their pipelines-file
//!   keys) refuse a module, naming the flag.
//! - State files: `state.db` and its `-wal` and `-shm` are created 0600.
//! - Metrics under load: a flood of scrapes and idle connections does not slow a pipeline's
//!   rows, and scrapes answer again once it ends.
//!
//! The private-address classes (hole 10) are pure logic, tested entry by entry in
//! `host/src/runtime/origin.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::guests::guest;
use crate::support::host::{assert_mentions, error_report, Outcome};
use crate::support::lines::ids;
use crate::support::tenants::*;
use crate::support::{at, Backend, Host, TestDb, Val};

/// The host's peak resident set next to these tenants stays below this.
const PEAK_RSS_KIB: u64 = 512 << 10;

// ---------------------------------------------------------------------------------------------
// Forged JSON Lines

/// A JSON document laid out over many lines, one of which reads as a JSON Lines delete of
/// row `id`, with a string that holds an escaped line break.
fn forging_document(id: i64) -> String {
    format!(
        "{{\n  \"a\": 1,\n  \"nested\": {{\n    \"list\": [1,\n      2],\n    \"s\": \"x\\ny\"\n  }},\n\
         \"forged\":\n{{\"batch\":\"forged\",\"op\":\"delete\",\"row\":{{\"id\":{id}}}}}\n}}\n"
    )
}

/// Every line of a JSON Lines file, checked: each parses on its own as an upsert of this
/// host (no forged batch), and rows come one line each. Returns the rows.
fn one_line_per_row(path: &Path, rows: usize) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|err| panic!("a line that is not JSON ({err}): {line:?}\n{text}"))
        })
        .collect();
    for line in &parsed {
        assert_eq!(line["op"], "upsert", "a forged line: {line}");
        assert_ne!(line["batch"], "forged", "a forged line: {line}");
        assert!(
            line["row"]["id"].is_i64(),
            "a line without a row id: {line}"
        );
    }
    assert_eq!(parsed.len(), rows, "lines in {}:\n{text}", path.display());
    parsed.into_iter().map(|line| line["row"].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_values_and_module_rows_cannot_forge_lines() {
    let Some(pg) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let maria = TestDb::new(Backend::MariaDb).await;
    let tenants = Tenants::new();
    let healthy = users(&pg, "healthy", 1..=5).await;
    let by_module = users(&pg, "by_module", 1..=4).await;

    let docs = pg.table("docs");
    pg.execute(&format!(
        "CREATE TABLE {docs} (id integer PRIMARY KEY, doc json, docb jsonb, \
         updated_at timestamptz NOT NULL)"
    ))
    .await;
    for id in 1..=3 {
        let doc = forging_document(id);
        pg.execute(&format!(
            "INSERT INTO {docs} VALUES ({id}, '{doc}', '{doc}', {})",
            pg.lit(&Val::Ts(at(id)))
        ))
        .await;
    }
    let mut pipelines = vec![
        tenants.pipeline("healthy", pg.url(), &healthy, &modules(&["passthrough"])),
        tenants.pipeline("pg-json", pg.url(), &docs, ""),
        tenants.pipeline(
            "by-module",
            pg.url(),
            &by_module,
            &modules(&["guest_forge_lines"]),
        ),
    ];
    if let Some(maria) = &maria {
        let docs = maria.table("docs");
        maria
            .execute(&format!(
                "CREATE TABLE {docs} (id INT PRIMARY KEY, doc JSON, \
                 updated_at TIMESTAMP(6) NOT NULL)"
            ))
            .await;
        for id in 1..=3 {
            // MariaDB reads backslashes in literals: the document's `\n` escape doubled.
            let doc = forging_document(id).replace('\\', "\\\\");
            maria
                .execute(&format!(
                    "INSERT INTO {docs} VALUES ({id}, '{doc}', {})",
                    maria.lit(&Val::Ts(at(id)))
                ))
                .await;
        }
        pipelines.push(tenants.pipeline("maria-json", maria.url(), &docs, ""));
    }
    tenants.write("", &pipelines);

    let mut running = tenants.spawn(&[]);
    tenants
        .wait_for_ids(&mut running, "healthy", &[1, 2, 3, 4, 5], PROMPTLY)
        .await;
    tenants
        .wait_for_ids(&mut running, "pg-json", &[1, 2, 3], PROMPTLY)
        .await;
    tenants
        .wait_for_ids(&mut running, "by-module", &[1, 2, 3, 4], PROMPTLY)
        .await;
    if maria.is_some() {
        tenants
            .wait_for_ids(&mut running, "maria-json", &[1, 2, 3], PROMPTLY)
            .await;
    }
    // The healthy tenant's new rows arrive promptly next to them.
    pg.insert_users(&healthy, (10..15).map(|id| (id, Val::Now)))
        .await;
    let took = tenants
        .wait_for_ids(&mut running, "healthy", &[10, 11, 12, 13, 14], PROMPTLY)
        .await;
    assert!(took < Duration::from_secs(3), "healthy rows took {took:?}");
    let peak = peak_rss_kib(running.pid().expect("the host runs"));
    assert!(peak < PEAK_RSS_KIB, "peak RSS {peak} KiB");
    let outcome = running.terminate().await;
    assert_eq!(outcome.code(), Some(0), "{outcome}");

    // The documents arrive whole, their values intact, one line per row.
    for id in 1..=3 {
        let expected: Value = serde_json::from_str(&forging_document(id)).unwrap();
        let rows = one_line_per_row(&tenants.output("pg-json"), 3);
        let row = rows.iter().find(|row| row["id"] == id).unwrap();
        assert_eq!(row["doc"], expected, "json column of row {id}");
        assert_eq!(row["docb"], expected, "jsonb column of row {id}");
        if maria.is_some() {
            let rows = one_line_per_row(&tenants.output("maria-json"), 3);
            let row = rows.iter().find(|row| row["id"] == id).unwrap();
            assert_eq!(row["doc"], expected, "MariaDB JSON column of row {id}");
        }
    }
    let rows = one_line_per_row(&tenants.output("by-module"), 4);
    for row in &rows {
        assert_eq!(
            row["forged"]["op"], "delete",
            "the module's value kept: {row}"
        );
        assert_eq!(row["pretty"]["id"], row["id"], "{row}");
    }
    one_line_per_row(&tenants.output("healthy"), 10);
    assert_eq!(ids(&tenants.lines("healthy")).len(), 10);
}

// ---------------------------------------------------------------------------------------------
// The compile cache

/// `host check --module PATH --cache-dir DIR`, whatever its exit code.
async fn check(host: &Host, module: &Path, cache: &Path) -> Outcome {
    host.exec([
        "check",
        "--module",
        &module.display().to_string(),
        "--cache-dir",
        &cache.display().to_string(),
    ])
    .await
}

/// The last line of `host check`: how the module was loaded.
fn loaded(outcome: &Outcome) -> &str {
    assert!(outcome.success(), "host check failed: {outcome}");
    outcome.stdout.lines().last().unwrap_or_default()
}

/// The passthrough component with a custom section appended: `content` decides its bytes,
/// not its size.
fn variant(content: &[u8; 8]) -> Vec<u8> {
    let mut wasm = std::fs::read(guest("passthrough")).unwrap();
    // Section 0 (custom): its size, then the name "x" and the content.
    wasm.extend_from_slice(&[0, 10, 1, b'x']);
    wasm.extend_from_slice(content);
    wasm
}

fn cwasm_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[tokio::test]
async fn a_module_replaced_in_place_is_compiled_again() {
    let host = Host::scratch();
    let cache = host.cache_dir();
    let module = host.dir().join("module.wasm");
    std::fs::write(&module, variant(b"aaaaaaaa")).unwrap();
    let first = check(&host, &module, &cache).await;
    assert!(loaded(&first).starts_with("compiled"), "{first}");
    let again = check(&host, &module, &cache).await;
    assert!(
        loaded(&again).starts_with("loaded from the compile cache"),
        "{again}"
    );

    // The same size, and the modification time set back: only the content tells.
    let modified = std::fs::metadata(&module).unwrap().modified().unwrap();
    std::fs::write(&module, variant(b"bbbbbbbb")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&module)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    assert_eq!(
        std::fs::metadata(&module).unwrap().modified().unwrap(),
        modified
    );
    let replaced = check(&host, &module, &cache).await;
    assert!(
        loaded(&replaced).starts_with("compiled"),
        "a replaced module must not load the old code: {replaced}"
    );
    assert_eq!(cwasm_files(&cache).len(), 2, "one entry per content");
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the cache directory's mode");
}

#[tokio::test]
async fn a_cache_others_may_write_is_refused() {
    let tenants = Tenants::new();
    let cache = tenants.host.cache_dir();
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();

    let outcome = check(&tenants.host, &guest("passthrough"), &cache).await;
    assert_eq!(outcome.code(), Some(2), "{outcome}");
    let report = error_report(&outcome);
    assert_mentions(
        report,
        "the refusal",
        &[
            &cache.display().to_string(),
            "may be written by other users",
            "chmod 700",
            "--cache-dir",
        ],
    );
    assert!(cwasm_files(&cache).is_empty(), "nothing cached");

    // A pipelines file with that cache is refused before any pipeline runs.
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("SQLite needs nothing");
    let table = users(&db, "users", 1..=3).await;
    tenants.write(
        "",
        &[tenants.pipeline("users", db.url(), &table, &modules(&["passthrough"]))],
    );
    let outcome = tenants.run(&["--once"]).await;
    assert_eq!(outcome.code(), Some(2), "{outcome}");
    assert_mentions(error_report(&outcome), "the refusal", &["chmod 700"]);
    assert!(tenants.lines("users").is_empty(), "no row delivered");
}

#[tokio::test]
async fn a_link_planted_in_the_cache_is_neither_loaded_nor_written_through() {
    let host = Host::scratch();
    let cache = host.cache_dir();
    let module = guest("passthrough");
    assert!(loaded(&check(&host, &module, &cache).await).starts_with("compiled"));
    let [entry] = &cwasm_files(&cache)[..] else {
        panic!("one cache entry expected: {:?}", cwasm_files(&cache));
    };
    // The entry becomes a link to a file elsewhere (here a copy of the real thing: were
    // links followed, it would load).
    let elsewhere = host.dir().join("elsewhere.cwasm");
    std::fs::rename(entry, &elsewhere).unwrap();
    let before = std::fs::read(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, entry).unwrap();

    let outcome = check(&host, &module, &cache).await;
    assert!(
        loaded(&outcome).starts_with("compiled"),
        "a link in the cache must not be loaded: {outcome}"
    );
    assert!(
        !std::fs::symlink_metadata(entry).unwrap().is_symlink(),
        "the link is replaced by a file of the cache's own"
    );
    assert_eq!(
        std::fs::read(&elsewhere).unwrap(),
        before,
        "the link's target is untouched"
    );
}

/// A module above the size cap is refused before it is read or compiled, naming the cap.
#[tokio::test]
async fn a_module_above_the_size_cap_is_refused() {
    let host = Host::scratch();
    let module = host.dir().join("huge.wasm");
    // Sparse: 65 MiB on paper, nothing on disk.
    let file = std::fs::File::create(&module).unwrap();
    file.set_len(65 << 20).unwrap();
    let outcome = check(&host, &module, &host.cache_dir()).await;
    assert_eq!(outcome.code(), Some(2), "{outcome}");
    assert_mentions(
        error_report(&outcome),
        "the refusal",
        &[
            &module.display().to_string(),
            "64 MiB a module may be (--max-module-size)",
        ],
    );
}

/// `host check` of the passthrough component with `extra`, in a fresh cache: exit 2, and the
/// error names the module and each of `mentions`.
async fn refused_by_check(extra: &[&str], mentions: &[&str]) {
    let host = Host::scratch();
    let module = guest("passthrough").display().to_string();
    let cache = host.cache_dir().display().to_string();
    let mut args = vec!["check", "--module", &module, "--cache-dir", &cache];
    args.extend_from_slice(extra);
    let outcome = host.exec(&args).await;
    assert_eq!(outcome.code(), Some(2), "host check {extra:?}: {outcome}");
    let mut all = vec![module.as_str()];
    all.extend_from_slice(mentions);
    assert_mentions(error_report(&outcome), "the refusal", &all);
}

/// A pipelines file whose one pipeline sets `key`: the pipeline fails (`host run --once`
/// exits 1, as for any pipeline of a file that fails) and its error names the module and each
/// of `mentions`.
async fn refused_by_file(key: &str, mentions: &[&str]) {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("SQLite needs no server");
    let tenants = Tenants::new();
    let table = users(&db, "small", 1..=3).await;
    let module = guest("passthrough").display().to_string();
    tenants.write(
        "",
        &[tenants.pipeline(
            "small",
            db.url(),
            &table,
            &format!("modules = [{}]\n{key}", quote(&module)),
        )],
    );
    let outcome = tenants.run(&["--once"]).await;
    assert_eq!(outcome.code(), Some(1), "{key}: {outcome}");
    let mut all = vec![module.as_str()];
    all.extend_from_slice(mentions);
    assert_mentions(&outcome.stderr, "the pipeline's error", &all);
}

/// `--max-module-size` lowers the cap on `host check` and, as `max_module_size`, in a
/// pipelines file; each refusal names the flag that raises it.
#[tokio::test]
async fn the_module_size_cap_is_a_flag() {
    let mentions = [
        "more than the 1 KiB a module may be (--max-module-size)",
        "raise --max-module-size",
    ];
    refused_by_check(&["--max-module-size", "1KiB"], &mentions).await;
    refused_by_file("max_module_size = \"1KiB\"", &mentions).await;
}

/// `--compile-timeout` bounds a compile on `host check` and, as `compile_timeout`, in a
/// pipelines file; each refusal names the flag that raises it.
#[tokio::test]
async fn the_compile_timeout_is_a_flag() {
    let mentions = [
        "did not compile within 1ms (--compile-timeout)",
        "raise --compile-timeout",
    ];
    refused_by_check(&["--compile-timeout", "1ms"], &mentions).await;
    refused_by_file("compile_timeout = \"1ms\"", &mentions).await;
}

// ---------------------------------------------------------------------------------------------
// State files

/// The state store holds dead letters (source rows), errors and URLs: after a run through the
/// real binary, `state.db` and its `-wal` and `-shm` files are readable by their owner only.
#[tokio::test]
async fn the_state_store_is_its_owners_alone() {
    let db = TestDb::new(Backend::Sqlite)
        .await
        .expect("SQLite needs no server");
    let tenants = Tenants::new();
    let table = users(&db, "rows", 1..=3).await;
    tenants.write(
        "",
        &[tenants.pipeline("rows", db.url(), &table, &modules(&["passthrough"]))],
    );
    let outcome = tenants.run(&["--once"]).await;
    assert!(outcome.success(), "{outcome}");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(tenants.host.dir()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("state.db") {
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
            seen.push(name);
        }
    }
    assert!(
        seen.contains(&"state.db".to_owned()),
        "state files: {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Metrics under load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_flood_does_not_slow_the_pipelines() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let tenants = Tenants::new();
    let healthy = users(&db, "healthy", 1..=5).await;
    let address = format!("127.0.0.1:{}", closed_port());
    tenants.write(
        &format!("metrics = {}", quote(&address)),
        &[tenants.pipeline("healthy", db.url(), &healthy, "")],
    );
    let mut running = tenants.spawn(&[]);
    tenants
        .wait_for_ids(&mut running, "healthy", &[1, 2, 3, 4, 5], PROMPTLY)
        .await;

    // For a few seconds: 48 clients scraping as fast as they can, and 8 that connect and
    // never send a byte, all on loopback.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut flood = Vec::new();
    for _ in 0..48 {
        let (stop, answered, address) = (stop.clone(), answered.clone(), address.clone());
        flood.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if scrape_once(&address) {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let idle: Vec<TcpStream> = (0..8)
        .filter_map(|_| TcpStream::connect(&address).ok())
        .collect();

    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut next = 100;
    while started.elapsed() < Duration::from_secs(4) {
        let new: Vec<i64> = (next..next + 5).collect();
        next += 5;
        db.insert_users(&healthy, new.iter().map(|id| (*id, Val::Now)))
            .await;
        let took = tenants
            .wait_for_ids(&mut running, "healthy", &new, PROMPTLY)
            .await;
        slowest = slowest.max(took);
    }
    stop.store(true, Ordering::Relaxed);
    for client in flood {
        client.join().unwrap();
    }
    drop(idle);
    assert!(
        slowest < Duration::from_secs(3),
        "rows waited {slowest:?} during the flood"
    );
    assert!(
        answered.load(Ordering::Relaxed) > 0,
        "no scrape answered during the flood"
    );

    // After it, scrapes answer with the pipeline's numbers (at most a second old).
    let delivered = ids(&tenants.lines("healthy")).len() as f64;
    let start = Instant::now();
    loop {
        if let Some(text) = scrape(&address) {
            if metric(&text, "tidemark_rows_delivered_total", "healthy") == delivered {
                break;
            }
        }
        assert!(
            start.elapsed() < PROMPTLY,
            "no up-to-date scrape after the flood"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = peak_rss_kib(running.pid().expect("the host runs"));
    assert!(peak < PEAK_RSS_KIB, "peak RSS {peak} KiB");
    let outcome = running.terminate().await;
    assert_eq!(outcome.code(), Some(0), "{outcome}");
}

/// One `GET /metrics`; whether a 200 came back within 2 s.
fn scrape_once(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}
