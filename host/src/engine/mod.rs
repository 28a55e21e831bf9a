//! The engine: one pipeline wired ([`pipeline`]) and its [`sync`] loop, which reads a page,
//! hands it to delivery and moves the checkpoint; the fence a worker delivers under
//! ([`fence`]), dead letters sent again ([`replay`]), hard deletes ([`deletes`]), and what a
//! pass tells the user ([`progress`], [`sync_log`]).

pub mod deletes;
pub mod fence;
pub mod pass;
pub mod pipeline;
pub mod progress;
pub mod replay;
pub mod settings;
pub mod sync;
pub mod sync_log;
