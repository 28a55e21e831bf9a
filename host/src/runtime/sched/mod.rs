//! When and how long guest code runs: the guest [`executor`], fair shares of guest CPU between
//! pipelines ([`fairness`]) and each module's [`limits`].

pub mod executor;
pub mod fairness;
pub mod limits;
