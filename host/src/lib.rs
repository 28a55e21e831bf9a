//! Tidemark: a delta-based ("high watermark") sync engine.
//!
//! Data flows one way: a [`source`] reads the rows changed since the last checkpoint in
//! keyset pages, the [`sync`] loop hands each [`model::Batch`] to its [`output::Output`]
//! (JSON Lines, or the module chain of [`runtime::chain`]), and only then moves the
//! checkpoint in the [`state`] store. [`model`] holds the vocabulary all of them share.

pub mod attempt;
pub mod cli;
pub mod commands;
pub mod config;
pub mod deletes;
pub mod error;
pub mod failpoint;
pub mod ids;
pub mod json;
pub mod key;
pub mod letters;
pub mod metrics;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod pipelines_file;
pub mod poison;
pub mod progress;
pub mod relative_paths;
pub mod replay;
pub mod retry;
pub mod runtime;
pub mod shutdown;
pub mod source;
pub mod sqlite_quotes;
pub mod state;
pub mod supervisor;
pub mod sync;
pub mod sync_log;
pub mod workers;

pub use error::{Error, ErrorKind, Result};
