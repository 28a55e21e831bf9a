//! Hostile tenants (issue 11): answers that cost the host more than the guest, and guests
//! that take more than their share of guest CPU, each next to a healthy tenant in one process.
//!
//! - Rejection amplification: a destination that rejects the same row ten times, or a row the
//!   batch does not have, fails its batch (the rule named, the watermark unmoved) without the
//!   host copying a row per rejection; one that answers four million rejections, or a 50 MiB
//!   reason, is refused before the host copies its answer (the bound named, the host's peak
//!   RSS bounded); one that rejects every row of a 5,000-row batch with 20 KiB reasons leaves
//!   dead letters with reasons cut to 1 KiB.
//! - Fair guest CPU: next to three guests spinning to their deadlines, a healthy tenant's
//!   module calls still come promptly, and the spinning ones back off.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::host::assert_mentions;
use crate::support::tenants::*;
use crate::support::{Backend, TestDb};

/// `modules = [...]` with the flooding destination in `mode`.
fn flood(mode: &str) -> String {
    format!(
        "modules = [{{ path = {}, config = {{ mode = {} }} }}]",
        quote(
            &crate::support::guests::guest("guest_reject_flood")
                .display()
                .to_string()
        ),
        quote(mode)
    )
}

/// The most the host process may reach with the flooding tenants: the modules' own memory
/// (the flood's 112 MB, the huge reason's 50 MiB, each freed when its call ends) and the
/// host's ~50 MiB, but not the 128 MiB a flood of 4 million rejections takes once copied into
/// the host, nor 50 MiB more for a reason copied whole.
const FLOOD_PEAK_KIB: u64 = 256 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_rejections_fails_the_batch_without_costing_the_host() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let tenants = Tenants::new();
    let healthy = users(&db, "healthy", 1..=5).await;
    let repeat = users(&db, "repeat", 1..=3).await;
    let range = users(&db, "range", 1..=3).await;
    let flooding = users(&db, "flooding", 1..=3).await;
    let huge = users(&db, "huge", 1..=3).await;
    tenants.write(
        "",
        &[
            tenants.pipeline("healthy", db.url(), &healthy, &modules(&["passthrough"])),
            tenants.pipeline("repeat", db.url(), &repeat, &flood("repeat")),
            tenants.pipeline("range", db.url(), &range, &flood("out-of-range")),
            tenants.pipeline("flooding", db.url(), &flooding, &flood("flood")),
            tenants.pipeline("huge", db.url(), &huge, &flood("huge-reason")),
        ],
    );
    let mut running = tenants.spawn(&[]);
    tenants
        .wait_for_ids(&mut running, "healthy", &[1, 2, 3, 4, 5], PROMPTLY)
        .await;
    let bad = ["repeat", "range", "flooding", "huge"];
    let status = wait_for_errors(
        &tenants,
        &mut running,
        &bad,
        "every flooding tenant failed a batch",
        Duration::from_secs(60),
    )
    .await;
    let slowest = tenants
        .healthy_keeps_moving(&mut running, &db, &healthy, 100, 3, Duration::ZERO)
        .await;
    assert!(
        slowest < Duration::from_secs(3),
        "the healthy tenant waited {slowest:?} next to the flooding ones"
    );
    let peak = peak_rss_kib(running.pid().expect("the host runs"));
    eprintln!("flood: peak RSS {peak} KiB, slowest healthy round {slowest:?}");
    assert!(
        peak < FLOOD_PEAK_KIB,
        "peak RSS {peak} KiB, over {FLOOD_PEAK_KIB} KiB"
    );

    let error = |name: &str| status[name]["last_error"].as_str().unwrap_or("").to_owned();
    assert_mentions(
        &error("repeat"),
        "the error of ten rejections of one row",
        &[
            "guest_reject_flood",
            "rejected 10 rows of a batch of 3",
            "at most once",
        ],
    );
    assert_mentions(
        &error("range"),
        "the error of a rejection past the end",
        &[
            "guest_reject_flood",
            "rejected row 3 of a batch of 3",
            "no such row",
        ],
    );
    // Four million rejections, and one 50 MiB reason: refused before the host copies them,
    // by the bound on what a destination hands over for a batch of 3 rows.
    for name in ["flooding", "huge"] {
        assert_mentions(
            &error(name),
            "the error of an answer past its bound",
            &[
                "guest_reject_flood",
                "handed the host more than 1024 KiB at once",
                "64 KiB per row of the batch",
                "--memory-limit of 256 MiB",
            ],
        );
    }
    for name in bad {
        let own = &status[name];
        assert!(
            own["watermark"].is_null(),
            "{name}'s watermark moved: {own}"
        );
        assert_eq!(own["rows_synced"], json!(0), "{name}: {own}");
        assert_eq!(own["dead_letters"], json!(0), "{name}: {own}");
    }
    assert_eq!(
        status["healthy"]["errors"],
        json!(0),
        "{}",
        status["healthy"]
    );
    assert!(running.try_finish().is_none(), "the host exited");
    running.sigterm();
    running.finish_within(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_reasons_are_cut_and_dead_letters_written_in_chunks() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let tenants = Tenants::new();
    let healthy = users(&db, "healthy", 1..=5).await;
    let wordy = users(&db, "wordy", 1..=5_000).await;
    tenants.write(
        "",
        &[
            tenants.pipeline("healthy", db.url(), &healthy, &modules(&["passthrough"])),
            // 5,000 reasons of 20 KiB: 100 MB in the guest, and as much again in the host
            // while the answer is read, before each reason is cut.
            tenants.pipeline(
                "wordy",
                db.url(),
                &wordy,
                &format!("{}\nbatch_size = 5000", flood("wordy")),
            ),
        ],
    );
    let mut running = tenants.spawn(&[]);
    tenants
        .wait_for_ids(&mut running, "healthy", &[1, 2, 3, 4, 5], PROMPTLY)
        .await;
    let status = wait_for_status(
        &tenants,
        &mut running,
        "every wordy row rejected",
        Duration::from_secs(60),
        |status| {
            status
                .get("wordy")
                .is_some_and(|own| own["rows_synced"] == json!(5_000))
        },
    )
    .await;
    assert_eq!(
        status["wordy"]["dead_letters"],
        json!(5_000),
        "{}",
        status["wordy"]
    );
    tenants
        .healthy_keeps_moving(&mut running, &db, &healthy, 100, 2, Duration::ZERO)
        .await;
    let peak = peak_rss_kib(running.pid().expect("the host runs"));
    eprintln!("wordy: peak RSS {peak} KiB");
    assert!(peak < 512 << 10, "peak RSS {peak} KiB");
    running.sigterm();
    running.finish_within(Duration::from_secs(15)).await;

    let state = tenants.host.state_url();
    let listed = tenants
        .host
        .exec([
            "dead-letters",
            "--state",
            &state,
            "--pipeline",
            "wordy",
            "--json",
        ])
        .await;
    assert!(listed.success(), "{listed}");
    let letters: Vec<Value> = serde_json::from_str(&listed.stdout).expect("JSON dead letters");
    assert_eq!(letters.len(), 5_000);
    for letter in &letters {
        let reason = letter["reason"].as_str().expect("a reason");
        let (kept, marker) = reason.split_once('…').expect("a cut reason");
        assert!(kept.len() <= 1024, "{} bytes kept", kept.len());
        assert!(
            kept.starts_with(&format!("row {}: why why", letter["index"])),
            "{kept}"
        );
        assert!(marker.starts_with(" (cut from 204"), "{marker}");
    }
}

/// Three guests spin until their 1 s deadlines; the healthy tenant's passthrough still runs
/// promptly on every new row, and the spinning tenants' retries back off (1 s, 2 s, 4 s, …)
/// rather than spinning every half second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_guests_leave_a_healthy_tenant_its_share() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let tenants = Tenants::new();
    let healthy = users(&db, "healthy", 1..=5).await;
    let mut pipelines =
        vec![tenants.pipeline("healthy", db.url(), &healthy, &modules(&["passthrough"]))];
    for n in 0..3 {
        let table = users(&db, &format!("spin{n}"), 1..=3).await;
        pipelines.push(tenants.pipeline(
            &format!("spin{n}"),
            db.url(),
            &table,
            // A guest that fails every batch as it always did: no poison isolation.
            &format!(
                "{}\ndeadline = \"1s\"\non_poison = \"stop\"",
                modules(&["guest_loop_forever"])
            ),
        ));
    }
    tenants.write("", &pipelines);
    let mut running = tenants.spawn(&[]);
    tenants
        .wait_for_ids(&mut running, "healthy", &[1, 2, 3, 4, 5], PROMPTLY)
        .await;
    let slowest = tenants
        .healthy_keeps_moving(&mut running, &db, &healthy, 100, 5, Duration::ZERO)
        .await;
    eprintln!("spinning: slowest healthy round {slowest:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "the healthy tenant waited {slowest:?} for its rows next to spinning guests"
    );
    wait_for_log(&mut running, "retrying in 4s", Duration::from_secs(30)).await;
    let status = tenants.status().await;
    for n in 0..3 {
        let own = &status[&format!("spin{n}")];
        assert!(own["watermark"].is_null(), "{own}");
        assert_mentions(
            own["last_error"].as_str().unwrap_or(""),
            "a spinning guest's error",
            &["guest_loop_forever", "deadline of 1s"],
        );
    }
    assert_eq!(
        status["healthy"]["errors"],
        json!(0),
        "{}",
        status["healthy"]
    );
    running.sigterm();
    running.finish_within(Duration::from_secs(15)).await;
}
