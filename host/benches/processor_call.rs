//! The fixed cost of one module call: an empty batch through `passthrough.wasm` (a fresh
//! instance from the pre-instantiated component, the call, the store dropped), and for scale
//! the rows/s of the call alone on a 1,000-row batch.
//!
//! Usage:
//!   bash scripts/build-guests
//!   cargo bench -p tidemark-host --bench processor_call
//!
//! The module is looked up in `<workspace>/target/wasm32-wasip2/release/passthrough.wasm`, or
//! under `$CARGO_TARGET_DIR` when that is set. The module is compiled once at start-up (no
//! compile cache), which is not timed. Target: the median empty-batch call under 100 µs.
//!
//! `TIDEMARK_BENCH_MODULE=NAME` times `NAME.wasm` from the same directory instead, a transform
//! that returns every row (`mask_pii`: the guest side of issue 13, without the database).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark::runtime::{engine::EngineOptions, limits, Batch, ModuleConfig, Outcome, Runtime};
use tidemark::runtime::{HttpOptions, Limits, Module};

const WARMUP_CALLS: usize = 100;
const EMPTY_CALLS: usize = 2_000;
const FULL_CALLS: usize = 200;
const FULL_ROWS: usize = 1_000;
const TARGET_EMPTY_MICROS: f64 = 100.0;

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` (and any filter); there is nothing to choose here.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("processor_call: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn module_path() -> anyhow::Result<PathBuf> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        // Cargo resolves a relative CARGO_TARGET_DIR against the directory it was started in;
        // the usual one is the workspace root.
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    };
    let name = std::env::var("TIDEMARK_BENCH_MODULE").unwrap_or_else(|_| "passthrough".into());
    let path = target_dir.join(format!("wasm32-wasip2/release/{name}.wasm"));
    if !path.is_file() {
        anyhow::bail!(
            "{} not found; build the guests first: bash scripts/build-guests",
            path.display()
        );
    }
    Ok(path.canonicalize()?)
}

fn run() -> anyhow::Result<()> {
    let path = module_path()?;
    let runtime = Runtime::new(&EngineOptions {
        fuel: false,
        max_memory: limits::DEFAULT_MEMORY,
        cache_dir: None,
    })?;
    let loading = Instant::now();
    let module = runtime.load(
        &path,
        "bench",
        ModuleConfig::default(),
        Limits::default(),
        &HttpOptions::default(),
    )?;
    let load_time = loading.elapsed();

    // Like the host: a multi-threaded tokio runtime, the calls awaited one after the other.
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    tokio.block_on(bench(&module, &path, load_time))
}

async fn bench(module: &Module, path: &std::path::Path, load_time: Duration) -> anyhow::Result<()> {
    let empty = Arc::new(Batch {
        id: "b".into(),
        pipeline: "bench".into(),
        rows: "[]".into(),
    });
    let full = Arc::new(Batch {
        id: "b".into(),
        pipeline: "bench".into(),
        rows: rows_json(FULL_ROWS),
    });

    // Check the module does what is expected before timing it.
    let rows = call_rows(module, &empty).await?;
    anyhow::ensure!(
        count_rows(&rows)? == 0,
        "the module returned rows for an empty batch: {rows}"
    );
    let rows = call_rows(module, &full).await?;
    let returned = count_rows(&rows)?;
    anyhow::ensure!(
        returned == FULL_ROWS,
        "the module returned {returned} rows for {FULL_ROWS}"
    );

    for _ in 0..WARMUP_CALLS {
        call_rows(module, &empty).await?;
    }
    let mut times = Vec::with_capacity(EMPTY_CALLS);
    let mut peak_memory = 0;
    for _ in 0..EMPTY_CALLS {
        let started = Instant::now();
        let (outcome, usage) = module.call(empty.clone()).await;
        let outcome = outcome?;
        times.push(started.elapsed());
        drop(outcome);
        peak_memory = peak_memory.max(usage.peak_memory);
    }

    for _ in 0..(WARMUP_CALLS / 10) {
        call_rows(module, &full).await?;
    }
    let mut full_times = Vec::with_capacity(FULL_CALLS);
    let mut full_peak_memory = 0;
    let full_started = Instant::now();
    for _ in 0..FULL_CALLS {
        let started = Instant::now();
        let (outcome, usage) = module.call(full.clone()).await;
        let outcome = outcome?;
        full_times.push(started.elapsed());
        drop(outcome);
        full_peak_memory = full_peak_memory.max(usage.peak_memory);
    }
    let full_total = full_started.elapsed();

    let stats = Stats::of(&mut times);
    let full_stats = Stats::of(&mut full_times);
    let rows_per_s = (FULL_CALLS * FULL_ROWS) as f64 / full_total.as_secs_f64();

    println!();
    println!("module call: {}", path.display());
    println!(
        "  load (compile, no cache): {:.1} ms",
        load_time.as_secs_f64() * 1e3
    );
    println!(
        "  empty batch, {EMPTY_CALLS} calls after {WARMUP_CALLS} warm-up: mean {:.1} µs, median {:.1} µs, p99 {:.1} µs, min {:.1} µs, max {:.1} µs; peak linear memory {:.1} MiB",
        stats.mean, stats.median, stats.p99, stats.min, stats.max,
        peak_memory as f64 / (1 << 20) as f64
    );
    println!(
        "  {FULL_ROWS}-row batch ({} bytes of JSON), {FULL_CALLS} calls: mean {:.0} µs, median {:.0} µs, p99 {:.0} µs per call; {:.0} rows/s for the call alone; peak linear memory {:.1} MiB",
        full.rows.len(),
        full_stats.mean,
        full_stats.median,
        full_stats.p99,
        rows_per_s,
        full_peak_memory as f64 / (1 << 20) as f64
    );
    println!();
    println!(
        "target: fixed cost per batch (median empty-batch call) < {TARGET_EMPTY_MICROS:.0} µs"
    );
    println!(
        "  {:<26} {} (median {:.1} µs, p99 {:.1} µs)",
        format!("per-batch cost < {TARGET_EMPTY_MICROS:.0} µs:"),
        if stats.median < TARGET_EMPTY_MICROS {
            "OK"
        } else {
            "MISSED"
        },
        stats.median,
        stats.p99
    );
    Ok(())
}

async fn call_rows(module: &Module, batch: &Arc<Batch>) -> anyhow::Result<String> {
    match module.call(batch.clone()).await.0? {
        Outcome::Transformed(transformed) => Ok(transformed.rows),
        other => anyhow::bail!("expected rows from a transform, got {other:?}"),
    }
}

fn count_rows(rows: &str) -> anyhow::Result<usize> {
    let value: serde_json::Value = serde_json::from_str(rows)?;
    match value.as_array() {
        Some(array) => Ok(array.len()),
        None => anyhow::bail!("the module returned something other than a JSON array"),
    }
}

/// `n` upserts shaped like the rows of `bench/sync-postgres.sh`.
fn rows_json(n: usize) -> String {
    let mut out = String::with_capacity(n * 160);
    out.push('[');
    for i in 1..=n {
        if i > 1 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"op":"upsert","row":{{"id":{i},"email":"user{i}@example.com","name":"User {i}","plan":"pro","score":1.5,"updated_at":"2024-01-01T00:00:00.000001Z"}}}}"#
        ));
    }
    out.push(']');
    out
}

/// Microseconds.
struct Stats {
    mean: f64,
    median: f64,
    p99: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(times: &mut [Duration]) -> Stats {
        times.sort_unstable();
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        let n = times.len();
        let at = |q: f64| micros(times[((n as f64 * q).ceil() as usize).clamp(1, n) - 1]);
        Stats {
            mean: times.iter().copied().map(micros).sum::<f64>() / n as f64,
            median: if n % 2 == 1 {
                micros(times[n / 2])
            } else {
                (micros(times[n / 2 - 1]) + micros(times[n / 2])) / 2.0
            },
            p99: at(0.99),
            min: micros(times[0]),
            max: micros(times[n - 1]),
        }
    }
}
