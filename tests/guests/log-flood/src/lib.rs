//! Test guest: floods the host's log through every channel it has (the host interface's `log`,
//! stdout, stderr), `--set lines=N` lines each (default 1,000,000), with lines that try to
//! forge host log lines after a newline and to drive the terminal with ANSI escapes; then
//! passes its rows on unchanged.

use tidemark_sdk::{log, Batch, Change, Result};

const FORGED: &str = "\n2026-01-01T00:00:00Z  INFO forged: pipeline healthy caught up";

fn flood(batch: Batch) -> Result<Vec<Change>> {
    let lines: u64 = tidemark_sdk::config("lines")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    // The forgeries first, so that they fall within the log budget and reach the host's log.
    log::info(format!("log-flood starts{FORGED}"));
    println!("stdout \x1b[2J\x1b[31mred\x1b[0m\r2026-01-01T00:00:00Z  INFO forged by stdout");
    eprintln!("stderr{FORGED}\u{2028}2026-01-01T00:00:00Z  INFO forged by stderr");
    for n in 0..lines {
        log::info(format!("flood line {n} of {lines}"));
    }
    // Many lines in few writes: the host splits them.
    let block: String = (0..1_000).map(|n| format!("stdout flood {n}\n")).collect();
    for _ in 0..lines / 1_000 {
        print!("{block}");
        eprint!("{block}");
    }
    Ok(batch.changes)
}

tidemark_sdk::transform!(flood);
