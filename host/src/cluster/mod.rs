//! Many pipelines in one process and several processes sharing them: the [`supervisor`]
//! (starts, restarts, reloads and stops pipelines), [`membership`] of workers (who holds which
//! pipeline, fair shares) and the [`metrics`] served over HTTP.

pub mod membership;
pub mod metrics;
pub mod settings;
pub mod sqlite_lock;
pub mod supervisor;
