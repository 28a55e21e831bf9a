//! What a process running many pipelines runs with, as the pipelines file
//! ([`crate::front::pipelines_file`]) said it, validated: the state store, the process-wide
//! limits, each pipeline's settings and weight. The cluster reads it; the front writes it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::engine::settings::RunConfig;
use crate::model::error::Result;

/// Everything a multi-pipeline process runs with.
#[derive(Debug, Clone)]
pub struct PipelinesFile {
    pub path: PathBuf,
    pub state_url: String,
    pub metrics: Option<SocketAddr>,
    /// Batches being delivered at once, across all pipelines.
    pub max_batches_in_flight: usize,
    /// How long a stop waits for batches in flight before abandoning them.
    pub stop_timeout: Duration,
    /// How long a worker's lease on a pipeline lasts unrenewed (see [`crate::cluster::membership`]).
    pub lease_ttl: Duration,
    /// Connections of the pool each source database's pipelines share.
    pub max_source_connections: u32,
    pub pipelines: Vec<RunConfig>,
    /// What each pipeline weighs when workers share them (`weight`, default 1), by name.
    pub weights: BTreeMap<String, u32>,
}

/// Reads the pipelines file at a path again, for a reload (the front's
/// `PipelinesFile::load`; the cluster never parses the file itself).
pub type Reload = fn(&Path) -> Result<PipelinesFile>;

impl PipelinesFile {
    /// The file's pipelines by name, with their weights.
    pub fn weighted(&self) -> Vec<(String, u32)> {
        self.pipelines
            .iter()
            .map(|config| {
                let weight = self.weights.get(&config.pipeline).copied().unwrap_or(1);
                (config.pipeline.clone(), weight)
            })
            .collect()
    }
}
