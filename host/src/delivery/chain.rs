//! A chain of modules as an [`Output`]: each batch goes through the transforms in the order
//! given, then to its end, which is either JSON Lines or a destination module. The sync loop
//! checkpoints only after the whole chain succeeded.

use std::path::Path;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::delivery::output::{JsonLines, Output, StageFailure};
use crate::model::error::{Error, ErrorKind, Result};
use crate::model::rejections;
use crate::model::{self, Delivered, RejectedRow, Rows, Usage};
use crate::runtime::{Batch, Module, Outcome, Rejection, World};

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
    /// The module failure of the last delivery, for [`Output::take_failure`].
    failure: Option<StageFailure>,
    /// Each module call with what it used, kept only for `host test`, which shows them.
    calls: Option<Vec<Call>>,
}

/// One module call of a batch, as `host test` reports it.
#[derive(Debug, Clone)]
pub struct Call {
    pub module: String,
    /// Whether fuel was counted (else `usage.fuel` is 0).
    pub fuel_metered: bool,
    pub usage: Usage,
}

impl Chain {
    /// Orders `modules` as given; only the last one may be a destination. Without a
    /// destination, rows are appended to `output` (standard output when `None`); with one,
    /// `output` is refused, since the destination module delivers the rows itself.
    pub fn new(modules: Vec<Module>, output: Option<&Path>) -> Result<Self> {
        let (transforms, destination) = split_destination(modules)?;
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
        Ok(Chain {
            transforms,
            end,
            failure: None,
            calls: None,
        })
    }

    /// The chain of `host test`: the same modules, checks and answers as `host run`, its
    /// rows written to `lines` (a capture) unless a destination takes them, and every call
    /// recorded with what it used ([`Chain::calls`]).
    pub fn recording(modules: Vec<Module>, lines: JsonLines) -> Result<Self> {
        let (transforms, destination) = split_destination(modules)?;
        Ok(Chain {
            transforms,
            end: destination.map_or(ChainEnd::Lines(lines), ChainEnd::Module),
            failure: None,
            calls: Some(Vec::new()),
        })
    }

    /// The calls made so far, in order, when the chain records them.
    pub fn calls(&self) -> &[Call] {
        self.calls.as_deref().unwrap_or_default()
    }

    pub fn has_destination(&self) -> bool {
        matches!(self.end, ChainEnd::Module(_))
    }

    /// Runs the transforms from stage `stage` on (stage `transforms.len()` is the end), then
    /// hands the rows to the end of the chain. An empty batch runs stage `stage` alone: it
    /// probes whether the module fails without any row. A module that fails leaves its stage
    /// and input in `self.failure`.
    async fn run(
        &mut self,
        stage: usize,
        batch: model::Batch<'_>,
        used: &mut Usage,
    ) -> Result<Delivered> {
        self.failure = None;
        let probe = batch.rows.is_empty();
        if stage >= self.transforms.len() {
            if let ChainEnd::Lines(lines) = &mut self.end {
                return match probe {
                    true => Ok(Delivered::default()),
                    false => lines.deliver_lines(batch),
                };
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
        // Rows the transforms rejected on the way, as each received them.
        let mut rejected: Vec<RejectedRow> = Vec::new();
        for (index, transform) in self.transforms.iter().enumerate().skip(stage) {
            let (outcome, usage) = transform.call(call.clone()).await;
            used.add(usage);
            record(&mut self.calls, transform, usage);
            tracing::debug!(
                "{}: batch {} through {} in {:?}",
                batch.pipeline,
                batch.id,
                transform.name(),
                usage.time
            );
            let first = index == stage;
            let transformed = outcome.and_then(|outcome| match outcome {
                Outcome::Transformed(transformed) => Ok(transformed),
                Outcome::Delivered(_) => Err(Error::fatal(format!(
                    "module {} returned a delivery result where rows were expected",
                    transform.name()
                ))),
            });
            let transformed = transformed.and_then(|transformed| {
                let letters = rejected_rows(transform, &call, transformed.rejections)?;
                Ok((transformed.rows, letters))
            });
            let (rows, letters) = match transformed {
                Ok(answer) => answer,
                Err(err) => {
                    if err.kind().may_be_a_row() {
                        self.failure =
                            failure(index, transform, &call, batch.rows, first, rejected);
                    }
                    return Err(err);
                }
            };
            unchanged &= letters.rows.is_empty() && rows == call.rows;
            rejected.extend(letters.rows);
            // The call is over, so the batch is no longer shared: no copy is made.
            Arc::make_mut(&mut call).rows = rows;
            if probe {
                return Ok(Delivered::default());
            }
        }
        self.end(stage, batch, &call, unchanged, rejected, used)
            .await
    }

    /// Hands the rows the transforms made (`call`) to the end of the chain. `rejected` are
    /// the rows the transforms rejected: they come first among the rows left behind, or go
    /// with the destination's failure, to be kept when its batch is split.
    async fn end(
        &mut self,
        stage: usize,
        batch: model::Batch<'_>,
        call: &Arc<Batch>,
        unchanged: bool,
        rejected: Vec<RejectedRow>,
        used: &mut Usage,
    ) -> Result<Delivered> {
        let end = self.transforms.len();
        let lines = match &mut self.end {
            ChainEnd::Module(destination) => {
                let (outcome, usage) = destination.call(call.clone()).await;
                used.add(usage);
                record(&mut self.calls, destination, usage);
                // Rows the transforms left as they were need no count of their own.
                let handed = unchanged.then_some(batch.rows.len());
                let delivered =
                    outcome.and_then(|outcome| delivery_result(destination, call, handed, outcome));
                return match delivered {
                    Ok(delivered) => Ok(with_rejected(rejected, delivered)),
                    Err(err) => {
                        if err.kind().may_be_a_row() {
                            self.failure =
                                failure(end, destination, call, batch.rows, stage == end, rejected);
                        }
                        Err(err)
                    }
                };
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
        let delivered = lines.deliver_lines(model::Batch {
            id: batch.id,
            pipeline: batch.pipeline,
            rows: &rows,
        })?;
        Ok(with_rejected(rejected, delivered))
    }
}

/// `delivered` with the rows the transforms rejected before it, first.
fn with_rejected(mut rejected: Vec<RejectedRow>, mut delivered: Delivered) -> Delivered {
    if !rejected.is_empty() {
        rejected.append(&mut delivered.rejected);
        delivered.rejected = rejected;
    }
    delivered
}

/// What stage `stage` (module `module`) failed on: the rows of `call`, which are `given` when
/// the stage is the first one run (no second parse), else parsed back from the text; and the
/// rows the stages before it rejected.
fn failure(
    stage: usize,
    module: &Module,
    call: &Batch,
    given: &Rows,
    first: bool,
    rejected: Vec<RejectedRow>,
) -> Option<StageFailure> {
    let input = match first {
        true => given.clone(),
        // Rows a module returned were checked when they went on to the next stage; rows that
        // do not parse leave nothing to split.
        false => Rows::from_json_array(&call.rows).ok()?,
    };
    Some(StageFailure {
        stage,
        module: module.name().to_owned(),
        input,
        rejected,
    })
}

/// Takes the destination off the end of `modules`, refusing one anywhere else.
fn split_destination(mut modules: Vec<Module>) -> Result<(Vec<Module>, Option<Module>)> {
    let destination = match modules.last() {
        Some(last) if last.world() == World::Destination => modules.pop(),
        _ => None,
    };
    if let Some(misplaced) = modules.iter().find(|p| p.world() == World::Destination) {
        return Err(Error::invalid(format!(
            "module {} is a destination, but destinations must come last",
            misplaced.name()
        ))
        .with_hint("order the --module flags: transforms first, the destination last"));
    }
    Ok((modules, destination))
}

fn record(calls: &mut Option<Vec<Call>>, module: &Module, usage: Usage) {
    if let Some(calls) = calls {
        calls.push(Call {
            module: module.name().to_owned(),
            fuel_metered: module.fuel_metered(),
            usage,
        });
    }
}

/// Turns a destination module's answer into delivered and rejected rows. `handed` is the
/// number of rows in `call`, when known without parsing them. (Retry-later and fatal answers
/// became errors in the call, the same way for every module.)
fn delivery_result(
    destination: &Module,
    call: &Batch,
    handed: Option<usize>,
    outcome: Outcome,
) -> Result<Delivered> {
    match outcome {
        Outcome::Delivered(rejections) if rejections.is_empty() => Ok(Delivered {
            rejected: Vec::new(),
            parked: Vec::new(),
            passed_on: handed
                .unwrap_or_else(|| split_rows(&call.rows).map_or(0, |rows| rows.len())),
        }),
        Outcome::Delivered(rejections) => {
            let letters = rejected_rows(destination, call, rejections)?;
            Ok(Delivered {
                passed_on: letters.of - letters.rows.len(),
                rejected: letters.rows,
                parked: Vec::new(),
            })
        }
        Outcome::Transformed(_) => Err(Error::fatal(format!(
            "module {} returned rows where a delivery result was expected",
            destination.name()
        ))),
    }
}

/// The rows a module rejected, of the `of` rows it was given.
struct Letters {
    rows: Vec<RejectedRow>,
    of: usize,
}

/// The rows of `call` that `module` (a transform or a destination) rejected, each as it
/// received it, with the module's reason. The rule is checked before any row is copied:
/// each row at most once, and only rows the batch has; what is kept of each reason is
/// bounded. A broken rule fails the batch as a module failure.
fn rejected_rows(module: &Module, call: &Batch, rejections: Vec<Rejection>) -> Result<Letters> {
    if rejections.is_empty() {
        return Ok(Letters {
            rows: Vec::new(),
            of: 0,
        });
    }
    let rows = split_rows(&call.rows).unwrap_or_default();
    rejections::check(rejections.iter().map(|r| r.index), rows.len()).map_err(|what| {
        Error::new(
            ErrorKind::Module,
            format!(
                "module {} {what}, on batch {} of pipeline {:?}",
                module.name(),
                call.id,
                call.pipeline
            ),
        )
        .with_hint(rejections::RULE_HINT)
    })?;
    let letters = rejections
        .into_iter()
        .map(|rejection| RejectedRow {
            index: rejection.index,
            row: rows
                .get(rejection.index as usize)
                .map_or_else(|| "null".to_owned(), |row| row.get().to_owned()),
            reason: module.bounded(&rejection.reason),
            module: module.name().to_owned(),
            batch: None,
        })
        .collect();
    Ok(Letters {
        rows: letters,
        of: rows.len(),
    })
}

/// The elements of a JSON array, unparsed.
fn split_rows(rows: &str) -> Option<Vec<&RawValue>> {
    serde_json::from_str(rows).ok()
}

impl Output for Chain {
    async fn deliver(&mut self, batch: model::Batch<'_>) -> (Result<Delivered>, Usage) {
        self.deliver_from(0, batch).await
    }

    async fn deliver_from(
        &mut self,
        stage: usize,
        batch: model::Batch<'_>,
    ) -> (Result<Delivered>, Usage) {
        let mut used = Usage::default();
        let result = self.run(stage, batch, &mut used).await;
        (result, used)
    }

    fn take_failure(&mut self) -> Option<StageFailure> {
        self.failure.take()
    }

    fn stage_of(&self, module: &str) -> Option<usize> {
        let destination = match &self.end {
            ChainEnd::Module(destination) => Some(destination),
            ChainEnd::Lines(_) => None,
        };
        self.transforms
            .iter()
            .chain(destination)
            .position(|stage| stage.name() == module)
    }

    fn last_stage(&self) -> usize {
        self.transforms.len()
    }
}
