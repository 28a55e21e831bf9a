//! The sync loop's log lines, kept honest: what one pass read from the table, how many rows
//! the end of the chain took, how many a destination rejected, how many were redelivered from
//! a batch a crash left unacknowledged; and, when rows are held back by `--settle`, how many
//! and until when. The counting is done by the loop (`crate::engine::sync`); the wording is here.

use std::fmt;
use std::time::Duration;

use crate::model::error::Result;
use crate::model::{Delivered, Position};
use crate::source::{Driver, Source, Until};
use crate::state::PipelineState;

/// What a run did (or one pass of it, with [`Totals::since`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Rows read from the table and checkpointed, redelivered ones included.
    pub rows: u64,
    pub batches: u64,
    /// Of `rows`: those the end of the chain took (written, or taken by the destination).
    pub passed_on: u64,
    /// Of `rows`: those a module rejected (kept as dead letters).
    pub rejected: u64,
    /// Of `rows`: those a module failed on alone, every time (parked as dead letters).
    pub parked: u64,
    /// Of `rows`: those of a batch handed on before a crash and not checkpointed.
    pub redelivered: u64,
}

impl Totals {
    /// Counts a batch of `rows` rows that came through as `delivered` says.
    pub fn count(&mut self, rows: u64, delivered: &Delivered) {
        self.rows += rows;
        self.passed_on += delivered.passed_on as u64;
        self.rejected += delivered.rejected.len() as u64;
        self.parked += delivered.parked.len() as u64;
        self.batches += 1;
    }

    /// What was done since `before`, a copy of these totals taken earlier.
    pub fn since(&self, before: &Totals) -> Totals {
        Totals {
            rows: self.rows - before.rows,
            batches: self.batches - before.batches,
            passed_on: self.passed_on - before.passed_on,
            rejected: self.rejected - before.rejected,
            parked: self.parked - before.parked,
            redelivered: self.redelivered - before.redelivered,
        }
    }
}

/// `read 5 rows in 1 batch, passed on 3, rejected 0 (2 dropped by transforms)`: each count
/// once, so that the line adds up. Parked rows are counted only when there are any.
impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let batches = match self.batches {
            1 => "1 batch".to_owned(),
            n => format!("{n} batches"),
        };
        let mut parts = vec![
            format!("read {} rows in {batches}", self.rows),
            format!("passed on {}", self.passed_on),
            format!("rejected {}", self.rejected),
        ];
        if self.parked > 0 {
            parts.push(format!("parked {}", self.parked));
        }
        let dropped = self
            .rows
            .saturating_sub(self.passed_on + self.rejected + self.parked);
        if dropped > 0 {
            parts.push(format!("dropped by transforms {dropped}"));
        }
        f.write_str(&parts.join(", "))?;
        if self.redelivered > 0 {
            write!(
                f,
                " ({} of them redelivered: their batch was handed on before, but not checkpointed)",
                self.redelivered
            )?;
        }
        Ok(())
    }
}

/// Logs [`waiting_to_settle`] for the pipeline, so that a pass that read nothing is not
/// left unexplained: at info level after a `--once` pass; when polling, only while debug lines
/// are on (the line costs a query, and polling would repeat it every pass).
pub async fn log_waiting<S: Source>(
    source: &mut S,
    state: &PipelineState,
    settle: Duration,
    once: bool,
) -> Result<()> {
    let name = &state.name;
    if !once && !tracing::enabled!(tracing::Level::DEBUG) {
        return Ok(());
    }
    if let Some(line) = waiting_to_settle(source, &state.position, settle, |value| {
        Driver::from_url(&state.identity.source).map_or_else(
            |_| value.to_owned(),
            |driver| driver.shown_value(value).to_owned(),
        )
    })
    .await?
    {
        match once {
            true => tracing::info!("{name}: {line}"),
            false => tracing::debug!("{name}: {line}"),
        }
    }
    Ok(())
}

/// A line about the rows past the safe horizon, which wait for a later pass: how many, and
/// when the first of them is due (its cursor plus `settle`, on the database's clock). `None`
/// when no row waits. Costs a count and a one-row read.
/// `shown` turns a cursor's stored text into the value the database holds.
pub async fn waiting_to_settle<S: Source>(
    source: &mut S,
    after: &Position,
    settle: Duration,
    shown: impl Fn(&str) -> String,
) -> Result<Option<String>> {
    let waiting = source.count(after, Until::Horizon(None)).await?;
    if waiting == 0 {
        return Ok(None);
    }
    let first = source.read(after, Until::Horizon(None), 1).await?;
    let due = match first.last {
        Some(Position::After(mark)) => Some(shown(&mark.cursor)).and_then(|cursor| {
            crate::model::json::parse_timestamp(&cursor)
                .and_then(|at| Some(at + chrono::Duration::from_std(settle).ok()?))
                .map(|due| {
                    format!(
                    "; the first changed at {}, so it is read once the database's clock passes {}",
                    cursor,
                    due.format("%Y-%m-%d %H:%M:%S%.6f")
                )
                })
        }),
        _ => None,
    };
    Ok(Some(format!(
        "{waiting} rows changed too recently and wait for a later pass (--settle {}, or a transaction still open){}",
        match settle.subsec_nanos() {
            0 => format!("{}s", settle.as_secs()),
            _ => format!("{settle:?}"),
        },
        due.unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_line_adds_up() {
        let pass = Totals {
            rows: 5,
            batches: 2,
            passed_on: 2,
            rejected: 1,
            redelivered: 3,
            ..Totals::default()
        };
        assert_eq!(
            pass.to_string(),
            "read 5 rows in 2 batches, passed on 2, rejected 1, dropped by transforms 2 (3 of them redelivered: their batch was handed on before, but not checkpointed)"
        );
        let before = Totals {
            rows: 1,
            batches: 1,
            passed_on: 1,
            ..Totals::default()
        };
        assert_eq!(
            pass.since(&before).to_string(),
            "read 4 rows in 1 batch, passed on 1, rejected 1, dropped by transforms 2 (3 of them redelivered: their batch was handed on before, but not checkpointed)"
        );
        let parking = Totals {
            rows: 4,
            batches: 1,
            passed_on: 2,
            parked: 1,
            ..Totals::default()
        };
        assert_eq!(
            parking.to_string(),
            "read 4 rows in 1 batch, passed on 2, rejected 0, parked 1, dropped by transforms 1"
        );
    }
}
