//! The contract modules implement, by version: the host-side [`bindings`] of each world,
//! which [`world`] a component implements, and the rule its [`rejections`] keep. A new
//! contract version touches this folder.

pub mod bindings;
pub mod world;
