//! What one pipeline runs with, validated: its source, table, state store and output, the
//! sync loop's options and its module chain. The front ([`crate::front::config`] from flags,
//! [`crate::front::pipelines_file`] from a file) builds these; the engine and the cluster only
//! read them, and never see a flag.

use std::path::PathBuf;
use std::time::Duration;

use crate::delivery::retry::RetryPolicy;
use crate::model::redact::redact_url;
use crate::model::NullCursorPolicy;
use crate::runtime::engine::EngineOptions;
use crate::runtime::{HttpOptions, Limits, ModuleConfig};
use crate::source::TableSpec;

#[derive(Clone, serde::Serialize)]
pub struct RunConfig {
    pub source_url: String,
    pub table: TableSpec,
    pub state_url: String,
    pub pipeline: String,
    pub output: Option<PathBuf>,
    pub sync: SyncOptions,
    pub modules_config: ModulesConfig,
}

/// How a pipeline's sync loop runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncOptions {
    pub batch_size: usize,
    pub poll: Duration,
    pub settle: Duration,
    pub once: bool,
    pub null_cursor: NullCursorPolicy,
    pub retry: RetryPolicy,
    /// How often to look for hard deletes (`--detect-deletes`); `None`: never.
    pub detect_deletes: Option<Duration>,
}

/// The source URL shows without its password: configuration is logged in debug output.
impl std::fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunConfig")
            .field("source_url", &redact_url(&self.source_url))
            .field("table", &self.table)
            .field("state_url", &redact_url(&self.state_url))
            .field("pipeline", &self.pipeline)
            .field("output", &self.output)
            .field("sync", &self.sync)
            .field("modules", &self.modules_config)
            .finish()
    }
}

/// The module chain of a pipeline: modules in order, their configuration and limits.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModulesConfig {
    pub modules: Vec<PathBuf>,
    pub config: ModuleConfig,
    pub limits: Limits,
    pub cache_dir: Option<PathBuf>,
    pub http: HttpOptions,
    /// Configuration and secrets of single modules, by position in `modules`, on top of
    /// `config` (from a pipelines file).
    pub module_overrides: Vec<ModuleConfig>,
}

impl ModulesConfig {
    /// What module `index` sees: the pipeline's configuration (values and secrets, from the
    /// flags, a `[[pipeline]]` or `[defaults]`), then its own on top (a module table's `config`
    /// and `secrets` in a pipelines file). So a secret given to one module reaches no other.
    pub fn module_config(&self, index: usize) -> ModuleConfig {
        let mut config = self.config.clone();
        if let Some(own) = self.module_overrides.get(index) {
            config.values.extend(own.values.clone());
            config.secrets.extend(own.secrets.clone());
        }
        config
    }

    /// The engine settings these modules need.
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            fuel: self.limits.fuel.is_some(),
            max_memory: self.limits.memory,
            cache_dir: self.cache_dir.clone(),
        }
    }
}
