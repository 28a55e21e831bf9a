//! A chain of modules as an [`Output`]: each batch goes through the transforms in the order
//! given, then to its end, which is either JSON Lines or a destination module. The sync loop
//! checkpoints only after the whole chain succeeded.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use super::{rejections, Batch, DeliveryError, Module, Outcome, World};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{self, Delivered, RejectedRow, Rows, Usage};
use crate::output::{JsonLines, Output};

/// Where the rows go once the transforms are done with them.
pub enum ChainEnd {
    /// Written as JSON Lines, to a file or standard output.
    Lines(JsonLines),
    /// Delivered by a destination module.
    Module(Module),
}

pub struct Chain {
    transforms: Vec<Module>,
    end: ChainEnd,
}

impl Chain {
    /// Orders `modules` as given; only the last one may be a destination. Without a
    /// destination, rows are appended to `output` (standard output when `None`); with one,
    /// `output` is refused, since the destination module delivers the rows itself.
    pub fn new(modules: Vec<Module>, output: Option<&Path>) -> Result<Self> {
        let mut transforms = modules;
        let destination = match transforms.last() {
            Some(last) if last.world() == World::Destination => transforms.pop(),
            _ => None,
        };
        if let Some(misplaced) = transforms.iter().find(|p| p.world() == World::Destination) {
            return Err(Error::invalid(format!(
                "module {} is a destination, but destinations must come last",
                misplaced.name()
            ))
            .with_hint("order the --module flags: transforms first, the destination last"));
        }
        let end = match (destination, output) {
            (Some(destination), Some(path)) => {
                return Err(Error::invalid(format!(
                    "--output {} cannot be combined with destination module {}: the destination delivers the rows, nothing would be written",
                    path.display(),
                    destination.name()
                ))
                .with_hint("drop --output, or drop the destination module to write JSON Lines"));
            }
            (Some(destination), None) => ChainEnd::Module(destination),
            (None, Some(path)) => ChainEnd::Lines(JsonLines::append(path)?),
            (None, None) => ChainEnd::Lines(JsonLines::stdout()),
        };
        Ok(Chain { transforms, end })
    }

    pub fn has_destination(&self) -> bool {
        matches!(self.end, ChainEnd::Module(_))
    }

    /// Runs the transforms, then hands the rows to the end of the chain.
    async fn run(&mut self, batch: model::Batch<'_>, used: &mut Usage) -> Result<Delivered> {
        if self.transforms.is_empty() {
            if let ChainEnd::Lines(lines) = &mut self.end {
                return lines.deliver_lines(batch);
            }
        }
        // Shared with the guest runtime for the length of each call.
        let mut call = Arc::new(Batch {
            id: batch.id.to_owned(),
            pipeline: batch.pipeline.to_owned(),
            rows: batch.rows.to_json_array(),
        });
        // Rows that come back byte for byte as they went in need no second parse.
        let mut unchanged = true;
        for transform in &self.transforms {
            let (outcome, usage) = transform.call(call.clone()).await;
            used.add(usage);
            tracing::debug!(
                "{}: batch {} through {} in {:?}",
                batch.pipeline,
                batch.id,
                transform.name(),
                usage.time
            );
            match outcome? {
                Outcome::Rows(rows) => {
                    unchanged &= rows == call.rows;
                    // The call is over, so the batch is no longer shared: no copy is made.
                    Arc::make_mut(&mut call).rows = rows;
                }
                Outcome::Delivered(_) => {
                    return Err(Error::fatal(format!(
                        "module {} returned a delivery result where rows were expected",
                        transform.name()
                    )))
                }
            }
        }
        let lines = match &mut self.end {
            ChainEnd::Module(destination) => {
                let (outcome, usage) = destination.call(call.clone()).await;
                used.add(usage);
                return delivery_result(destination, &call, outcome?);
            }
            ChainEnd::Lines(lines) => lines,
        };
        if unchanged {
            return lines.deliver_lines(batch);
        }
        let last = self
            .transforms
            .last()
            .map(Module::name)
            .unwrap_or("the chain");
        let rows = Rows::from_json_array(&call.rows).map_err(|detail| {
            Error::new(
                ErrorKind::Module,
                format!("module {last} returned rows that are not a JSON array of {{\"op\", \"row\"}} objects: {detail}"),
            )
            .with_hint("return rows in the form the batch brought them: [{\"op\":\"upsert\",\"row\":{...}}]")
        })?;
        lines.deliver_lines(model::Batch {
            id: batch.id,
            pipeline: batch.pipeline,
            rows: &rows,
        })
    }
}

/// Turns a destination module's answer into rejected rows or an error of the kind the sync
/// loop acts on.
fn delivery_result(destination: &Module, call: &Batch, outcome: Outcome) -> Result<Delivered> {
    match outcome {
        Outcome::Delivered(Ok(rejections)) if rejections.is_empty() => Ok(Delivered::default()),
        Outcome::Delivered(Ok(rejections)) => {
            // The rule is checked before any row is copied: each row at most once, and only
            // rows the batch has; what is kept of each reason is bounded.
            let rows = split_rows(&call.rows).unwrap_or_default();
            rejections::check(rejections.iter().map(|r| r.index), rows.len()).map_err(|what| {
                Error::new(
                    ErrorKind::Module,
                    format!(
                        "module {} {what}, on batch {} of pipeline {:?}",
                        destination.name(),
                        call.id,
                        call.pipeline
                    ),
                )
                .with_hint(rejections::RULE_HINT)
            })?;
            let rejected = rejections
                .into_iter()
                .map(|rejection| RejectedRow {
                    index: rejection.index,
                    row: rows
                        .get(rejection.index as usize)
                        .map_or_else(|| "null".to_owned(), |row| row.get().to_owned()),
                    reason: rejections::bounded_reason(&rejection.reason, |text| {
                        destination.redact(text)
                    }),
                })
                .collect();
            Ok(Delivered { rejected })
        }
        Outcome::Delivered(Err(DeliveryError::RetryLater(retry))) => Err(Error::retry_later(
            format!(
                "destination {} asked to retry batch {} later: {}",
                destination.name(),
                call.id,
                destination.redact(&retry.message)
            ),
            retry.after_ms.map(Duration::from_millis),
        )),
        Outcome::Delivered(Err(DeliveryError::Fatal(message))) => Err(Error::fatal(format!(
            "destination {} stopped pipeline {:?} at batch {}: {}",
            destination.name(),
            call.pipeline,
            call.id,
            destination.redact(&message)
        ))),
        Outcome::Rows(_) => Err(Error::fatal(format!(
            "module {} returned rows where a delivery result was expected",
            destination.name()
        ))),
    }
}

/// The elements of a JSON array, unparsed.
fn split_rows(rows: &str) -> Option<Vec<&RawValue>> {
    serde_json::from_str(rows).ok()
}

impl Output for Chain {
    async fn deliver(&mut self, batch: model::Batch<'_>) -> (Result<Delivered>, Usage) {
        let mut used = Usage::default();
        let result = self.run(batch, &mut used).await;
        (result, used)
    }
}
