//! A chain of processors as a [`Destination`]: each batch goes through the transforms in the
//! order given, then to a destination module or to the output. The sync loop checkpoints only
//! after the whole chain succeeded.

use super::{Batch, DeliveryError, Outcome, Processor, World};
use crate::error::{Error, ErrorKind, Result};
use crate::output::{self, Destination};
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
}

impl<D: Destination> Destination for Chain<D> {
    async fn deliver(&mut self, batch: output::Batch<'_>) -> Result<()> {
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
        for transform in &self.transforms {
            let (outcome, usage) = transform.call(&call).await?;
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
        if let Some(destination) = &self.destination {
            let (outcome, _) = destination.call(&call).await?;
            return match outcome {
                Outcome::Delivered(Ok(rejections)) => {
                    for rejection in rejections {
                        tracing::warn!(
                            "{}: {} rejected row {} of batch {}: {}",
                            batch.pipeline,
                            destination.name(),
                            rejection.index,
                            batch.id,
                            rejection.reason
                        );
                    }
                    Ok(())
                }
                Outcome::Delivered(Err(DeliveryError::RetryLater(retry))) => Err(Error::new(
                    ErrorKind::Transient,
                    format!(
                        "destination {} asked to retry batch {} later: {}",
                        destination.name(),
                        batch.id,
                        retry.message
                    ),
                )),
                Outcome::Delivered(Err(DeliveryError::Fatal(message))) => {
                    Err(Error::fatal(format!(
                        "destination {} stopped pipeline {:?}: {message}",
                        destination.name(),
                        batch.pipeline
                    )))
                }
                Outcome::Rows(_) => Ok(()),
            };
        }
        if unchanged {
            return self.output.deliver(batch).await;
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
    }
}
