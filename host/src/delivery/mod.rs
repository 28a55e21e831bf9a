//! Delivery: where a batch goes and how. The [`output::Output`] trait the engine delivers to,
//! with JSON Lines and the module [`chain`] as its ends. A batch's trip reads top to bottom:
//! the [`step`] every batch takes (hand on, charge on failure, keep the letters, commit); its
//! [`attempt`]s, given again while a module fails it; [`poison`] isolation once a module
//! has failed it every time, which splits it to find the rows at fault; each call of the
//! chain, offered again while a destination asks to [`retry_later`], waiting as the [`retry`]
//! policy says. The dead [`letters`] a batch leaves behind are kept beside its checkpoint.

pub mod attempt;
pub mod chain;
pub mod letters;
pub mod output;
pub mod poison;
pub mod retry;
pub mod retry_later;
pub mod step;
