//! What one pass works with, from reading a page to its checkpoint: the table, the delivery
//! step (output, state store, retry policy, stop requests, live dead letters), the pipeline's
//! state, the run's options and what the run counted. The pass is the sync loop's
//! ([`crate::engine::sync`]); the delete check at its end ([`crate::engine::deletes`])
//! works with the same.

use crate::delivery::step::Step;
use crate::engine::settings::SyncOptions;
use crate::engine::sync_log::Totals;
use crate::state::PipelineState;

/// One pipeline's pass: built once a run, its letters loaded again at the start of each pass.
pub struct Pass<'a, S, O> {
    pub source: &'a mut S,
    pub step: Step<'a, O>,
    pub state: &'a mut PipelineState,
    pub options: &'a SyncOptions,
    /// Over the whole run.
    pub totals: Totals,
}
