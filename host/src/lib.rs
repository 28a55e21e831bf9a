//! Tidemark: a delta-based ("high watermark") sync engine.
//!
//! Data flows one way: a [`source`] reads the rows changed since the last checkpoint in
//! keyset pages, the [`engine::sync`] loop hands each [`model::Batch`] to its
//! [`delivery::output::Output`] (JSON Lines, or the module chain of [`delivery::chain`]), and
//! only then moves the checkpoint in the [`state`] store. [`model`] holds the vocabulary all of
//! them share.
//!
//! The folders are layers, and imports only go down this list (`scripts/check-layout` keeps
//! it so): [`commands`] (one file per subcommand), [`front`] (flags, one validated
//! configuration, the pipelines file), [`cluster`] (many pipelines, workers, metrics),
//! [`engine`] (one pipeline, its sync loop, fencing, replay, hard deletes), [`delivery`] (where a
//! batch goes: outputs, the chain, attempts, poison isolation, dead letters), [`runtime`] (the
//! WebAssembly sandbox), [`source`] and [`state`], then [`model`].

pub mod cluster;
pub mod commands;
pub mod delivery;
pub mod engine;
pub mod front;
pub mod model;
pub mod runtime;
pub mod source;
pub mod state;

pub use model::error::{Error, ErrorKind, Result};
