//! The subcommands of `host`, one file each, and what they share: logging, signals, the
//! state store, the modules of a pipeline, and the two meanings of `--config`.
//!
//! They live in the library rather than in the binary's own module tree so that the binary
//! stays a shell (parse, dispatch, exit code), their helpers are covered by
//! `cargo test --lib`, and each subcommand is one documented function another front end or
//! test could call: `commands::<name>::run(args)`.

pub mod check;
pub mod dead_letters;
pub mod new;
pub mod reset;
pub mod retry;
pub mod run;
pub mod status;
pub mod test;

use std::path::Path;

use anyhow::Context as _;

use crate::engine::pipeline;
use crate::engine::settings::ModulesConfig;
use crate::model::error::Error;
use crate::model::shutdown::Shutdown;
use crate::runtime::{Module, Runtime};
use crate::state::StateStore;

/// Log lines go to standard error, filtered by `TIDEMARK_LOG` (default `info`), so that
/// standard output carries only what a command prints (rows, status, JSON).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// The first SIGINT or SIGTERM finishes the batch in hand; a second one exits at once
/// (the watermark is still safe: it never moves before delivery).
pub fn watch_signals(shutdown: Shutdown) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("cannot listen for signals; stop with SIGKILL");
            return;
        };
        for round in 0.. {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            if round > 0 {
                eprintln!("stopping now; the batch in hand will be delivered again next run");
                std::process::exit(130);
            }
            tracing::info!("stopping after the batch in hand");
            shutdown.request();
        }
    });
}

async fn open_store(url: &str) -> anyhow::Result<StateStore> {
    StateStore::open(url)
        .await
        .context("opening the state store")
}

/// An engine for these modules; none when there are no modules.
fn new_runtime(config: &ModulesConfig) -> anyhow::Result<Option<Runtime>> {
    if config.modules.is_empty() {
        return Ok(None);
    }
    Ok(Some(Runtime::new(&config.engine_options())?))
}

/// Loads and starts the modules of a pipeline, in order, under one engine.
async fn load_modules(config: &ModulesConfig, pipeline: &str) -> anyhow::Result<Vec<Module>> {
    match new_runtime(config)? {
        Some(runtime) => Ok(pipeline::load_modules(&runtime, config, pipeline).await?),
        None => Ok(Vec::new()),
    }
}

/// A pipeline name the state store has never seen (a reset pipeline keeps its dead letters).
fn unknown_pipeline(name: &str) -> Error {
    Error::invalid(format!("no pipeline named {name:?}"))
        .with_hint("run `host status` to list pipelines")
}

/// Sorts the values of `--config`: an entry with `=` that names no existing file is a module
/// value in the deprecated spelling and joins `set` (with one warning); the others are
/// returned: paths of pipelines files.
fn split_config(config: Vec<String>, set: &mut Vec<String>) -> Vec<String> {
    let (values, files): (Vec<String>, Vec<String>) = config
        .into_iter()
        .partition(|entry| entry.contains('=') && !Path::new(entry).exists());
    if !values.is_empty() {
        tracing::warn!("--config KEY=VALUE is deprecated; use --set KEY=VALUE");
        set.extend(values);
    }
    files
}

/// For `test` and `retry`, which take no pipelines file: `--config` is only the deprecated
/// spelling of `--set`.
fn module_values_only(config: Vec<String>, set: &mut Vec<String>) -> Result<(), Error> {
    match split_config(config, set).first() {
        None => Ok(()),
        Some(path) => Err(Error::invalid(format!(
            "--config {path:?} is not KEY=VALUE; only `host run` takes a pipelines file"
        ))
        .with_hint("pass module configuration as --set KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_with_an_equals_sign_is_a_module_value_unless_it_is_a_file() {
        let dir = std::env::temp_dir().join(format!("tidemark-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let odd = dir.join("a=b.toml");
        std::fs::write(&odd, "").unwrap();
        let odd = odd.display().to_string();
        let mut set = vec!["x=1".to_owned()];
        let files = split_config(
            vec![
                "drop=name".into(),
                "tidemark.toml".into(),
                odd.clone(),
                "url=https://h/?a=b".into(),
            ],
            &mut set,
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(files, ["tidemark.toml".to_owned(), odd]);
        assert_eq!(set, ["x=1", "drop=name", "url=https://h/?a=b"]);

        let mut set = Vec::new();
        assert!(module_values_only(vec!["a=1".into()], &mut set).is_ok());
        assert_eq!(set, ["a=1"]);
        let err = module_values_only(vec!["tidemark.toml".into()], &mut set).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Invalid);
    }
}
