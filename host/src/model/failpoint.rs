//! Failpoints: named stops at the sync loop's boundaries, so tests can change the database
//! or kill the process at an exact step.
//!
//! `TIDEMARK_FAILPOINTS="after_read=wait,after_deliver=wait@2"` with `TIDEMARK_FAILPOINT_DIR`
//! set: at the k-th hit of a waiting failpoint (every hit for `wait`, only hit N for
//! `wait@N`) the host creates `<dir>/<name>.<k>.reached` and blocks until `<dir>/<name>.<k>.go`
//! exists. Without the variables a failpoint costs one lookup in an empty list.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

struct Failpoint {
    /// `None`: stop at every hit.
    only_hit: Option<u64>,
    hits: AtomicU64,
}

struct Failpoints {
    dir: PathBuf,
    points: HashMap<String, Failpoint>,
}

fn configured() -> Option<&'static Failpoints> {
    static FAILPOINTS: OnceLock<Option<Failpoints>> = OnceLock::new();
    FAILPOINTS
        .get_or_init(|| {
            let spec = std::env::var("TIDEMARK_FAILPOINTS").ok()?;
            let dir = PathBuf::from(
                std::env::var("TIDEMARK_FAILPOINT_DIR").unwrap_or_else(|_| ".".into()),
            );
            let points = spec
                .split(',')
                .filter_map(|item| {
                    let (name, action) = item.trim().split_once('=')?;
                    let only_hit = match action.trim() {
                        "wait" => None,
                        other => Some(other.strip_prefix("wait@")?.parse().ok()?),
                    };
                    Some((
                        name.trim().to_owned(),
                        Failpoint {
                            only_hit,
                            hits: AtomicU64::new(0),
                        },
                    ))
                })
                .collect();
            Some(Failpoints { dir, points })
        })
        .as_ref()
}

/// Passes the failpoint `name`, stopping there if a test asked for it.
pub async fn hit(name: &str) {
    let Some(failpoints) = configured() else {
        return;
    };
    let Some(point) = failpoints.points.get(name) else {
        return;
    };
    let hit = point.hits.fetch_add(1, Ordering::SeqCst) + 1;
    if point.only_hit.is_some_and(|only| only != hit) {
        return;
    }
    let reached = failpoints.dir.join(format!("{name}.{hit}.reached"));
    let go = failpoints.dir.join(format!("{name}.{hit}.go"));
    if let Err(err) = std::fs::write(&reached, b"") {
        tracing::warn!(
            "failpoint {name}: cannot create {}: {err}",
            reached.display()
        );
        return;
    }
    while !go.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
