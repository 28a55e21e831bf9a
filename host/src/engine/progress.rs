//! Progress of a pass: a bar on a terminal, a log line every few seconds elsewhere.
//! Times here are the host's, which is fine: they only inform a person.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Passes with fewer pending rows than this finish too fast to be worth a bar.
const MIN_ROWS_TO_SHOW: u64 = 10_000;
const LOG_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    pipeline: String,
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    pub fn new(pipeline: &str, total: u64) -> Self {
        let bar = (total >= MIN_ROWS_TO_SHOW && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:40}] {human_pos}/{human_len} rows  {rate}  ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "rate",
                |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                    let _ = write!(out, "{:.0} rows/s", state.per_sec());
                },
            )
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(pipeline.to_owned());
            bar
        });
        let now = Instant::now();
        Progress {
            pipeline: pipeline.to_owned(),
            bar,
            total,
            done: 0,
            started: now,
            last_log: now,
        }
    }

    pub fn advance(&mut self, rows: u64) {
        self.done += rows;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done.min(self.total));
            return;
        }
        if self.total >= MIN_ROWS_TO_SHOW && self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
            let rate = self.done as f64 / elapsed;
            let remaining = self.total.saturating_sub(self.done) as f64 / rate.max(1.0);
            tracing::info!(
                "{}: {} of ~{} rows ({:.0} rows/s, about {:.0}s left)",
                self.pipeline,
                self.done,
                self.total,
                rate,
                remaining
            );
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
