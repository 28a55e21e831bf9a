//! The delivery step every batch takes, a run's batches of rows, delete batches and dead
//! letters sent again alike: hand the batch on with its attempts ([`attempt`]: retries and
//! poison isolation), charge what the modules used when it failed (no checkpoint will), keep
//! the dead letters it left behind, and commit it as its kind says ([`Commit`]).

use crate::delivery::attempt;
use crate::delivery::letters::Letters;
use crate::delivery::output::Output;
use crate::delivery::retry::RetryPolicy;
use crate::model::error::Result;
use crate::model::failpoint;
use crate::model::key::Key;
use crate::model::shutdown::Shutdown;
use crate::model::{Batch, Delivered, Position, Rows};
use crate::state::{PipelineState, StateStore};

/// Where one pipeline's batches go, and what a delivery works with.
pub struct Step<'a, O> {
    pub output: &'a mut O,
    pub store: &'a StateStore,
    pub retry: &'a RetryPolicy,
    pub shutdown: &'a Shutdown,
    /// The pipeline whose batches these are.
    pub pipeline: String,
    /// Its live dead letters, which the rows of a batch supersede.
    pub letters: Letters,
}

/// How a batch that came through is committed, by kind.
pub enum Commit<'c> {
    /// A batch of rows, recorded as pending before: the checkpoint moves to `end`, and the
    /// batch's letters are kept in the same step.
    Rows {
        state: &'c mut PipelineState,
        end: &'c Position,
    },
    /// A delete batch of the keys `gone`, recorded as pending before with `kept` (the keys
    /// found present again, left out of it).
    Deletes {
        state: &'c mut PipelineState,
        gone: &'c [Key],
        kept: &'c [Key],
    },
    /// Dead letters sent again, from stage `stage` of the chain: no checkpoint, what the
    /// modules used is charged, and the caller settles the letters from the answer.
    Replay { stage: usize },
}

impl Commit<'_> {
    /// Where a test may stop the process (see [`failpoint`]): just before the batch is handed
    /// on, and just after it came through.
    fn failpoints(&self) -> (Option<&'static str>, Option<&'static str>) {
        match self {
            Commit::Rows { .. } => (Some("before_deliver"), Some("after_deliver")),
            Commit::Deletes { .. } => (Some("delete_after_read"), Some("delete_after_deliver")),
            Commit::Replay { .. } => (None, None),
        }
    }

    fn stage(&self) -> usize {
        match self {
            Commit::Replay { stage } => *stage,
            Commit::Rows { .. } | Commit::Deletes { .. } => 0,
        }
    }
}

impl<O: Output> Step<'_, O> {
    /// Hands batch `id` of `rows` on and commits it as `commit` says. Returns what the chain
    /// answered; on a failure what the attempts used is charged first.
    pub async fn deliver(
        &mut self,
        id: &str,
        rows: &Rows,
        commit: Commit<'_>,
    ) -> Result<Delivered> {
        let batch = Batch {
            id,
            pipeline: &self.pipeline,
            rows,
        };
        let (before, after) = commit.failpoints();
        if let Some(name) = before {
            failpoint::hit(name).await;
        }
        let (delivered, usage) = attempt::deliver_with_retries(
            self.output,
            commit.stage(),
            batch,
            self.retry,
            self.shutdown,
            Some(self.store),
        )
        .await;
        let delivered = match delivered {
            Ok(delivered) => delivered,
            Err(err) => {
                // A failed attempt costs as much as a delivered one: charge it now, since no
                // checkpoint will carry it.
                if let Err(uncharged) = self.store.charge(&self.pipeline, usage).await {
                    tracing::warn!("{}: {uncharged:#}", self.pipeline);
                }
                return Err(err);
            }
        };
        if let Some(name) = after {
            failpoint::hit(name).await;
        }
        let store = self.store;
        if let Commit::Rows { .. } | Commit::Deletes { .. } = commit {
            self.letters
                .keep(store, &self.pipeline, id, rows, &delivered)
                .await?;
        }
        match commit {
            Commit::Rows { state, end } => {
                store
                    .commit_batch(state, end, rows, &delivered, usage)
                    .await?
            }
            Commit::Deletes { state, gone, kept } => {
                store
                    .commit_deletes(state, id, (gone, kept), &delivered, usage)
                    .await?
            }
            Commit::Replay { .. } => store.charge(&self.pipeline, usage).await?,
        }
        Ok(delivered)
    }
}
