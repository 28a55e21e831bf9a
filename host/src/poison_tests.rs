//! Poison isolation against a scripted one-module output: each test states one promise.

use std::collections::HashSet;
use std::time::Duration;

use super::*;
use crate::model::{Delivered, Op, Rows, Usage};
use crate::retry::{OnPoison, RetryPolicy};
use crate::sync::deliver_with_retries;

/// One module (stage 0, "picky") that fails any call holding one of its bad ids, or every
/// non-empty call, and writes what passes. It fails as a trap does, or with the error kind
/// `kind` says.
#[derive(Default)]
struct Picky {
    bad: HashSet<u64>,
    every_row: bool,
    empty_too: bool,
    kind: Option<ErrorKind>,
    calls: usize,
    /// Each delivered part: its id and row ids.
    delivered: Vec<(String, Vec<u64>)>,
    failure: Option<StageFailure>,
}

fn ids(rows: &Rows) -> Vec<u64> {
    rows.iter()
        .map(|(_, row)| {
            let row: serde_json::Value = serde_json::from_slice(row).unwrap();
            row["id"].as_u64().unwrap()
        })
        .collect()
}

impl Output for Picky {
    async fn deliver(&mut self, batch: Batch<'_>) -> (Result<Delivered>, Usage) {
        self.deliver_from(0, batch).await
    }

    async fn deliver_from(&mut self, stage: usize, batch: Batch<'_>) -> (Result<Delivered>, Usage) {
        assert_eq!(stage, 0);
        self.calls += 1;
        let ids = ids(batch.rows);
        let fails = match ids.is_empty() {
            true => self.empty_too,
            false => self.every_row || ids.iter().any(|id| self.bad.contains(id)),
        };
        if fails {
            let error = match self.kind {
                None => Error::new(
                    ErrorKind::Module,
                    format!("module picky trapped on batch {}", batch.id),
                ),
                Some(kind) => Error::new(
                    kind,
                    format!("picky answered fatal for batch {}: no such plan", batch.id),
                ),
            };
            // As the chain does: a failure a row may be at fault for names its stage.
            if error.kind().may_be_a_row() {
                self.failure = Some(StageFailure {
                    stage: 0,
                    module: "picky".into(),
                    input: batch.rows.clone(),
                    rejected: Vec::new(),
                });
            }
            return (Err(error), Usage::default());
        }
        if !ids.is_empty() {
            self.delivered.push((batch.id.to_owned(), ids));
        }
        (Ok(Delivered::default()), Usage::default())
    }

    fn take_failure(&mut self) -> Option<StageFailure> {
        self.failure.take()
    }
}

fn rows(count: u64) -> Rows {
    let mut rows = Rows::with_capacity(count as usize);
    for id in 0..count {
        rows.buffer()
            .extend_from_slice(format!(r#"{{"id":{id}}}"#).as_bytes());
        rows.end_row(Op::Upsert);
    }
    rows
}

fn policy(on_poison: OnPoison) -> RetryPolicy {
    RetryPolicy {
        max_retries: 1,
        backoff: Duration::from_millis(1),
        on_poison,
    }
}

async fn run(output: &mut Picky, count: u64, on_poison: OnPoison) -> Result<Delivered> {
    let rows = rows(count);
    let batch = Batch {
        id: "b1",
        pipeline: "p",
        rows: &rows,
    };
    let shutdown = Shutdown::default();
    deliver_with_retries(output, 0, batch, &policy(on_poison), &shutdown, None)
        .await
        .0
}

fn delivered_ids(output: &Picky) -> Vec<u64> {
    let mut ids: Vec<u64> = output
        .delivered
        .iter()
        .flat_map(|(_, ids)| ids.clone())
        .collect();
    ids.sort();
    ids
}

/// Module calls after the batch's own attempts (1 + max_retries).
fn split_calls(output: &Picky) -> usize {
    output.calls - 2
}

#[tokio::test]
async fn one_bad_row_of_a_thousand_is_parked_and_every_other_row_delivered_once() {
    let mut output = Picky {
        bad: HashSet::from([613]),
        ..Picky::default()
    };
    let delivered = run(&mut output, 1000, OnPoison::Park).await.unwrap();
    let parked: Vec<(u32, &str, &str)> = delivered
        .parked
        .iter()
        .map(|row| (row.index, row.stage.as_str(), row.row.as_str()))
        .collect();
    assert_eq!(
        parked,
        [(613, "picky", r#"{"op":"upsert","row":{"id":613}}"#)]
    );
    assert!(delivered.parked[0].reason.contains("trapped"));
    assert_eq!(delivered.parked[0].batch.as_deref(), Some("b1"));
    let expected: Vec<u64> = (0..1000).filter(|&id| id != 613).collect();
    assert_eq!(delivered_ids(&output), expected);
    // About log2(1000) levels, at most two calls each, plus the empty probe.
    assert!(split_calls(&output) <= 22, "{} calls", split_calls(&output));
    println!("1 bad row of 1000: {} calls", split_calls(&output));
}

#[tokio::test]
async fn five_bad_rows_cost_about_five_times_log_n_calls() {
    let bad = [3, 250, 251, 700, 999];
    let mut output = Picky {
        bad: HashSet::from(bad),
        ..Picky::default()
    };
    let delivered = run(&mut output, 1000, OnPoison::Park).await.unwrap();
    let mut parked: Vec<u32> = delivered.parked.iter().map(|row| row.index).collect();
    parked.sort();
    assert_eq!(parked, [3, 250, 251, 700, 999]);
    assert_eq!(delivered_ids(&output).len(), 995);
    assert!(
        split_calls(&output) <= 5 * 22,
        "{} calls",
        split_calls(&output)
    );
    println!("5 bad rows of 1000: {} calls", split_calls(&output));
}

#[tokio::test]
async fn a_batch_of_one_bad_row_is_parked() {
    let mut output = Picky {
        bad: HashSet::from([0]),
        ..Picky::default()
    };
    let delivered = run(&mut output, 1, OnPoison::Park).await.unwrap();
    assert_eq!(delivered.parked.len(), 1);
    assert!(output.delivered.is_empty());
}

#[tokio::test]
async fn a_module_that_fails_every_row_is_not_split_to_the_end() {
    let mut output = Picky {
        every_row: true,
        ..Picky::default()
    };
    let err = run(&mut output, 1000, OnPoison::Park).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Module);
    assert!(err.to_string().contains("fails every row"), "{err}");
    assert!(output.delivered.is_empty());
    // The way down to one row, then two more rows alone: no thousand calls.
    assert!(split_calls(&output) <= 16, "{} calls", split_calls(&output));
}

#[tokio::test]
async fn a_module_that_fails_an_empty_batch_is_not_split() {
    let mut output = Picky {
        every_row: true,
        empty_too: true,
        ..Picky::default()
    };
    let err = run(&mut output, 100, OnPoison::Park).await.unwrap_err();
    assert!(err.to_string().contains("empty batch"), "{err}");
    assert_eq!(split_calls(&output), 1);
}

#[tokio::test]
async fn with_on_poison_stop_the_first_failure_ends_the_delivery() {
    let mut output = Picky {
        bad: HashSet::from([5]),
        ..Picky::default()
    };
    let err = run(&mut output, 10, OnPoison::Stop).await.unwrap_err();
    assert!(err.to_string().contains("trapped"), "{err}");
    assert_eq!(output.calls, 1);
}

/// A transform's fatal answer on one row: the row is parked with the module's message, the
/// rest delivered, and the batch is split at once (no retry), with the calls a trap takes.
#[tokio::test]
async fn a_transform_answering_fatal_on_one_row_is_split_at_once() {
    let mut trapping = Picky {
        bad: HashSet::from([613]),
        ..Picky::default()
    };
    run(&mut trapping, 1000, OnPoison::Park).await.unwrap();
    let mut fatal = Picky {
        bad: HashSet::from([613]),
        kind: Some(ErrorKind::TransformFatal),
        ..Picky::default()
    };
    let delivered = run(&mut fatal, 1000, OnPoison::Park).await.unwrap();
    let parked: Vec<u32> = delivered.parked.iter().map(|row| row.index).collect();
    assert_eq!(parked, [613]);
    let reason = &delivered.parked[0].reason;
    assert!(reason.contains("answered fatal") && reason.contains("no such plan"));
    assert_eq!(delivered_ids(&fatal).len(), 999);
    assert_eq!(fatal.calls, 1 + split_calls(&trapping), "no retry");
}

/// A transform that answers fatal even to an empty batch (its configuration, not a row)
/// stops the delivery with its message after that one probe; so does any fatal answer with
/// `--on-poison stop`. A fatal answer that is not a transform's (a destination's 401) is
/// never split.
#[tokio::test]
async fn a_fatal_answer_that_is_not_about_rows_is_not_split() {
    let mut configured = Picky {
        every_row: true,
        empty_too: true,
        kind: Some(ErrorKind::TransformFatal),
        ..Picky::default()
    };
    let err = run(&mut configured, 100, OnPoison::Park).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TransformFatal);
    assert!(err.to_string().contains("empty batch"), "{err}");
    assert!(err.to_string().contains("no such plan"), "{err}");
    assert_eq!(configured.calls, 2, "the batch, then the empty probe");

    for (kind, on_poison) in [
        (ErrorKind::TransformFatal, OnPoison::Stop),
        (ErrorKind::Fatal, OnPoison::Park),
    ] {
        let mut output = Picky {
            bad: HashSet::from([5]),
            kind: Some(kind),
            ..Picky::default()
        };
        let err = run(&mut output, 10, on_poison).await.unwrap_err();
        assert_eq!(err.kind(), kind);
        assert_eq!(output.calls, 1, "{kind:?} with {on_poison:?}");
    }
}

#[tokio::test]
async fn a_batch_is_split_the_same_way_under_the_same_ids_every_time() {
    let mut first = Picky {
        bad: HashSet::from([17, 80]),
        ..Picky::default()
    };
    run(&mut first, 100, OnPoison::Park).await.unwrap();
    let mut second = Picky {
        bad: HashSet::from([17, 80]),
        ..Picky::default()
    };
    run(&mut second, 100, OnPoison::Park).await.unwrap();
    assert_eq!(first.delivered, second.delivered);
    let ids: HashSet<&String> = first.delivered.iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids.len(),
        first.delivered.len(),
        "each part has an id of its own"
    );
}

#[test]
fn part_ids_depend_on_the_batch_the_stage_and_the_rows() {
    assert_eq!(part_id("b", 0, &[0, 1, 2]), part_id("b", 0, &[0, 1, 2]));
    assert_ne!(part_id("b", 0, &[0, 1, 2]), part_id("b", 1, &[0, 1, 2]));
    assert_ne!(part_id("b", 0, &[0, 1, 2]), part_id("c", 0, &[0, 1, 2]));
    assert_ne!(part_id("b", 0, &[0, 1]), part_id("b", 0, &[0, 1, 2]));
    assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
}
