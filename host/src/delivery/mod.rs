//! Delivery: where a batch goes and how. The [`output::Output`] trait the engine delivers to,
//! with JSON Lines and the module [`chain`] as its ends; one [`attempt`] and its [`retry`]
//! back-off; [`poison`] isolation, which splits a failing batch to find the rows at fault; and
//! the dead [`letters`] a batch leaves behind.

pub mod attempt;
pub mod chain;
pub mod letters;
pub mod output;
pub mod poison;
pub mod retry;
