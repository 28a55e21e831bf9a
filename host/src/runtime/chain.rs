//! A chain of processors as a [`Destination`]: each batch goes through the transforms in the
//! order given, then to a destination module or to the output. The sync loop checkpoints only
//! after the whole chain succeeded.

use std::time::Duration;

use serde_json::value::RawValue;

use super::{Batch, DeliveryError, Outcome, Processor, World};
use crate::error::{Error, ErrorKind, Result};
use crate::output::{self, Delivered, Destination, GuestUsage, RejectedRow};
use crate::source::Rows;

pub struct Chain<D> {
    transforms: Vec<Processor>,
    /// The module that delivers, if the chain ends in one; else rows go to `output`.
    destination: Option<Processor>,
    output: D,
}

impl<D: Destination> Chain<D> {
    /// Orders `processors` as given; only the last one may be a destination.
    pub fn new(processors: Vec<Processor>, output: D) -> Result<Self> {
        let mut transforms = processors;
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
        Ok(Chain {
            transforms,
            destination,
            output,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty() && self.destination.is_none()
    }

    pub fn has_destination(&self) -> bool {
        self.destination.is_some()
    }
}

/// Hands rows, as the transforms left them, to the destination module, and turns its answer
/// into rejected rows or an error of the kind the sync loop acts on.
async fn send_to_destination(destination: &Processor, call: &Batch) -> Result<Delivered> {
    let (outcome, usage) = destination.call(call).await?;
    let mut used = GuestUsage::default();
    used.add(usage.time, usage.fuel, usage.peak_memory);
    match outcome {
        Outcome::Delivered(Ok(rejections)) if rejections.is_empty() => Ok(Delivered {
            usage: used,
            ..Delivered::default()
        }),
        Outcome::Delivered(Ok(rejections)) => {
            let rows = split_rows(&call.rows);
            let rejected = rejections
                .into_iter()
                .map(|rejection| {
                    let row = rows
                        .as_ref()
                        .and_then(|rows| rows.get(rejection.index as usize))
                        .map(|row| row.get().to_owned());
                    if row.is_none() {
                        tracing::error!(
                            "{}: {} rejected row {} of batch {}, which has no such row",
                            call.pipeline,
                            destination.name(),
                            rejection.index,
                            call.id
                        );
                    }
                    RejectedRow {
                        index: rejection.index,
                        row: row.unwrap_or_else(|| "null".to_owned()),
                        reason: destination.redact(&rejection.reason),
                    }
                })
                .collect();
            Ok(Delivered {
                rejected,
                usage: used,
            })
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

impl<D: Destination> Destination for Chain<D> {
    async fn deliver(&mut self, batch: output::Batch<'_>) -> Result<Delivered> {
        if self.is_empty() {
            return self.output.deliver(batch).await;
        }
        let mut call = Batch {
            id: batch.id.to_owned(),
            pipeline: batch.pipeline.to_owned(),
            rows: batch.rows.to_json_array(),
        };
        // Rows that come back byte for byte as they went in need no second parse.
        let mut unchanged = true;
        let mut used = GuestUsage::default();
        for transform in &self.transforms {
            let (outcome, usage) = transform.call(&call).await?;
            used.add(usage.time, usage.fuel, usage.peak_memory);
            tracing::debug!(
                "{}: batch {} through {} in {:?}",
                batch.pipeline,
                batch.id,
                transform.name(),
                usage.time
            );
            if let Outcome::Rows(rows) = outcome {
                unchanged &= rows == call.rows;
                call.rows = rows;
            }
        }
        let with_usage = |mut delivered: Delivered| {
            let own = delivered.usage;
            delivered.usage = used;
            delivered
                .usage
                .add(own.time, Some(own.fuel), own.peak_memory);
            delivered
        };
        if let Some(destination) = &self.destination {
            return send_to_destination(destination, &call)
                .await
                .map(with_usage);
        }
        if unchanged {
            return self.output.deliver(batch).await.map(with_usage);
        }
        let last = self
            .transforms
            .last()
            .map(Processor::name)
            .unwrap_or("the chain");
        let rows = Rows::from_json_array(&call.rows).map_err(|detail| {
            Error::new(
                ErrorKind::Processor,
                format!("module {last} returned rows that are not a JSON array of {{\"op\", \"row\"}} objects: {detail}"),
            )
            .with_hint("return rows in the form the batch brought them: [{\"op\":\"upsert\",\"row\":{...}}]")
        })?;
        self.output
            .deliver(output::Batch {
                id: batch.id,
                pipeline: batch.pipeline,
                rows: &rows,
            })
            .await
            .map(with_usage)
    }
}
