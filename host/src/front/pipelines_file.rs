//! The pipelines file: many pipelines in one process (`host run --config tidemark.toml`).
//!
//! ```toml
//! state = "sqlite://.tidemark/state.db"   # process-wide keys first
//! max_batches_in_flight = 8
//! lease_ttl = "5s"            # with a PostgreSQL state: how long a dead worker keeps its pipelines
//! max_source_connections = 8  # per source database, shared by the pipelines that read it
//!
//! [defaults]                  # any pipeline key; a pipeline's own value replaces it
//! batch_size = 1000
//!
//! [[pipeline]]
//! name = "acme-users"
//! source_env = "ACME_DATABASE_URL"     # or source = "sqlite://acme.db" (no password in clear)
//! table = "users"
//! modules = ["mask_pii.wasm", { path = "webhook.wasm", config = { url = "https://…" } }]
//! secrets = { token = "ACME_WEBHOOK_TOKEN" }   # key = environment variable
//! allow_hosts = ["https://hooks.acme.example"]
//! weight = 3                  # with several workers: counts as 3 pipelines in a fair share
//! ```
//!
//! A pipeline's keys are the long flags of `host run` without the dashes, `-` written `_`
//! (`batch_size`, `memory_limit`, `max_retries`, …), plus `name`, `modules`, `config`,
//! `secrets`, `allow_hosts` and `source_env`. They go through the same parser and checks as
//! the command line, so the file and the flags cannot drift apart. Relative paths (modules,
//! `output`, `cache_dir`, `sqlite://` URLs) are read from the file's folder.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::{Args, FromArgMatches};
use serde::Deserialize;
use toml::Spanned;

use crate::cluster::settings::PipelinesFile;
use crate::engine::settings::RunConfig;
use crate::front::cli::RunArgs;
use crate::front::relative_paths;
use crate::model::error::{Error, Result};
use crate::model::redact::redact_url;
use crate::runtime::ModuleConfig;

pub const DEFAULT_STATE: &str = "sqlite://.tidemark/state.db";

type Table = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    state: Option<String>,
    metrics: Option<String>,
    max_batches_in_flight: Option<usize>,
    stop_timeout: Option<String>,
    lease_ttl: Option<String>,
    max_source_connections: Option<u32>,
    #[serde(default)]
    defaults: Table,
    #[serde(default)]
    pipeline: Vec<Spanned<Table>>,
}

/// Keys that name a flag of `host run` but belong to the whole process, or to the command
/// line of one invocation.
const NOT_PER_PIPELINE: &[(&str, &str)] = &[
    ("state", "write it once at the top of the file"),
    ("once", "pass --once on the command line"),
    ("pipeline", "write name = \"…\""),
    ("module", "write modules = [\"…\"]"),
    ("secret", "write secrets = { key = \"ENV_VAR\" }"),
    ("set", "write config = { key = \"value\" }"),
    ("allow_host", "write allow_hosts = [\"https://…\"]"),
];

/// The file's own rules live here, in the front; what it says is the cluster's
/// [`PipelinesFile`].
impl PipelinesFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            Error::io(
                format!("cannot read the pipelines file {}", path.display()),
                err,
            )
            .with_hint("pass --config with the path of a tidemark.toml")
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let file = path.display().to_string();
        let document: Document = toml::from_str(text).map_err(|err| {
            let line = err.span().map(|span| line_of(text, span.start));
            Error::invalid(format!(
                "{file}{}: {}",
                line.map(|line| format!(":{line}")).unwrap_or_default(),
                err.message()
            ))
            .with_hint("top-level keys: state, metrics, max_batches_in_flight, stop_timeout, lease_ttl, max_source_connections, [defaults] and [[pipeline]] tables")
        })?;
        if document.pipeline.is_empty() {
            return Err(Error::invalid(format!("{file} lists no pipelines"))
                .with_hint("add a [[pipeline]] table with at least name, source and table"));
        }
        let metrics = document
            .metrics
            .as_deref()
            .map(|address| {
                address.parse::<SocketAddr>().map_err(|_| {
                    Error::invalid(format!("{file}: metrics = {address:?} is not an address"))
                        .with_hint("write metrics = \"127.0.0.1:9464\"")
                })
            })
            .transpose()?;
        let duration = |key: &str, text: &Option<String>, default: Duration| match text {
            Some(text) => humantime::parse_duration(text).map_err(|err| {
                Error::invalid(format!("{file}: {key} = {text:?}: {err}"))
                    .with_hint("write a duration such as 30s")
            }),
            None => Ok(default),
        };
        let stop_timeout = duration(
            "stop_timeout",
            &document.stop_timeout,
            Duration::from_secs(30),
        )?;
        let lease_ttl = duration(
            "lease_ttl",
            &document.lease_ttl,
            crate::cluster::membership::DEFAULT_LEASE_TTL,
        )?;
        if lease_ttl < Duration::from_secs(1) {
            return Err(Error::invalid(format!(
                "{file}: lease_ttl = {lease_ttl:?} is shorter than a second"
            ))
            .with_hint("write lease_ttl = \"5s\": a worker renews its leases every third of it"));
        }
        let max_batches_in_flight = document.max_batches_in_flight.unwrap_or(8);
        let max_source_connections = document.max_source_connections.unwrap_or(8);
        for (key, value) in [
            ("max_batches_in_flight", max_batches_in_flight),
            ("max_source_connections", max_source_connections as usize),
        ] {
            if value == 0 {
                return Err(Error::invalid(format!("{file}: {key} is 0"))
                    .with_hint(format!("write {key} = 1 or more")));
            }
        }
        let base = path.parent().unwrap_or(Path::new(""));
        let state_url = match &document.state {
            Some(url) => relative_paths::sqlite_url_from_folder(base, url),
            None => DEFAULT_STATE.to_owned(),
        };
        let mut pipelines: Vec<RunConfig> = Vec::new();
        let mut weights = BTreeMap::new();
        for table in &document.pipeline {
            let line = line_of(text, table.span().start);
            let mut merged = document.defaults.clone();
            for (key, value) in table.get_ref() {
                // Removed first: `insert` would keep the default's key, and with it the line
                // an error names.
                merged.remove(key);
                merged.insert(key.clone(), value.clone());
            }
            let in_pipeline = |err: Error| {
                let name = merged
                    .get("name")
                    .and_then(|name| name.get_ref().as_str())
                    .map(|name| format!(" {name:?}"))
                    .unwrap_or_default();
                err.context(format!("{file}:{line}: pipeline{name}"))
            };
            let weight = weight(text, &merged).map_err(in_pipeline)?;
            let mut flags = merged.clone();
            flags.remove("weight");
            let config = pipeline_config(text, &flags, &state_url, base).map_err(in_pipeline)?;
            if let Some(twin) = pipelines.iter().find(|p| p.pipeline == config.pipeline) {
                return Err(Error::invalid(format!(
                    "{file}:{line}: two pipelines are named {:?}",
                    twin.pipeline
                ))
                .with_hint("give each pipeline its own name: its watermark is kept under it"));
            }
            weights.insert(config.pipeline.clone(), weight);
            pipelines.push(config);
        }
        Ok(PipelinesFile {
            path: path.to_owned(),
            state_url,
            metrics,
            max_batches_in_flight,
            stop_timeout,
            lease_ttl,
            max_source_connections,
            pipelines,
            weights,
        })
    }
}

/// A pipeline's `weight` (not a flag of `host run`: it matters only to workers sharing the
/// file), 1 unless given.
fn weight(text: &str, table: &Table) -> Result<u32> {
    let Some((key, value)) = table.get_key_value("weight") else {
        return Ok(1);
    };
    match value.get_ref().as_integer() {
        Some(weight) if weight >= 1 => Ok(u32::try_from(weight).unwrap_or(u32::MAX)),
        _ => Err(Error::invalid(format!(
            "line {}, key weight: {} is not a positive whole number",
            line_of(text, key.span().start),
            value.get_ref()
        ))
        .with_hint("write weight = 2 for a pipeline that counts as two in a worker's fair share")),
    }
}

/// One pipeline's table, turned into the flags of `host run` and checked like them.
fn pipeline_config(text: &str, table: &Table, state_url: &str, base: &Path) -> Result<RunConfig> {
    let command = RunArgs::augment_args(clap::Command::new("pipeline").no_binary_name(true));
    let mut argv: Vec<String> = vec![arg("--state", state_url)];
    let mut overrides: Vec<ModuleConfig> = Vec::new();
    let mut where_is: BTreeMap<String, usize> = BTreeMap::new();
    if !table.contains_key("name") {
        return Err(Error::invalid("has no name")
            .with_hint("write name = \"…\": the pipeline's watermark is kept under it"));
    }
    for (key, value) in table {
        let line = line_of(text, key.span().start);
        let at = |err: Error| err.context(format!("line {line}, key {}", key.get_ref()));
        let name = key.get_ref().as_str();
        let value = value.get_ref();
        match name {
            "name" => push_flag(&mut argv, "--pipeline", value).map_err(at)?,
            "modules" => {
                for module in as_array(value).map_err(at)? {
                    let (path, own) = module_entry(module).map_err(at)?;
                    argv.push(arg("--module", relative_paths::from_folder(base, &path)));
                    overrides.push(own);
                }
            }
            "config" => {
                for (key, value) in as_table(value).map_err(at)? {
                    let value = scalar(value).map_err(at)?;
                    argv.push(arg("--set", format!("{key}={value}")));
                }
            }
            "secrets" => {
                for (key, variable) in as_table(value).map_err(at)? {
                    let variable = scalar(variable).map_err(at)?;
                    argv.push(arg("--secret", format!("{key}={variable}")));
                }
            }
            "allow_hosts" => {
                for origin in as_array(value).map_err(at)? {
                    push_flag(&mut argv, "--allow-host", origin).map_err(at)?;
                }
            }
            "source_env" => {
                let variable = scalar(value).map_err(at)?;
                let url = std::env::var(&variable).map_err(|_| {
                    at(
                        Error::invalid(format!("environment variable {variable} is not set"))
                            .with_hint(format!(
                                "export {variable}=postgres://… before starting host"
                            )),
                    )
                })?;
                argv.push(arg("--source", url));
            }
            "source" => {
                let url = scalar(value).map_err(at)?;
                // Whatever the redaction would mask is a password written in clear.
                if redact_url(&url) != url {
                    return Err(at(Error::invalid(format!(
                        "the source URL {} carries a password in clear",
                        redact_url(&url)
                    ))
                    .with_hint("put the URL in an environment variable and write source_env = \"VARIABLE\"")));
                }
                argv.push(arg(
                    "--source",
                    relative_paths::sqlite_url_from_folder(base, &url),
                ));
            }
            "output" | "cache_dir" => {
                let path = scalar(value).map_err(at)?;
                let flag = format!("--{}", name.replace('_', "-"));
                where_is.insert(flag.clone(), line);
                argv.push(arg(&flag, relative_paths::from_folder(base, &path)));
            }
            _ => {
                if let Some((_, fix)) = NOT_PER_PIPELINE.iter().find(|(key, _)| *key == name) {
                    return Err(at(
                        Error::invalid("cannot be set per pipeline").with_hint(*fix)
                    ));
                }
                let flag = name.replace('_', "-");
                let known = command
                    .get_arguments()
                    .any(|arg| arg.get_long() == Some(flag.as_str()));
                if !known || name.contains('-') {
                    return Err(at(Error::invalid("is not a pipeline key")).with_hint(
                        "pipeline keys are the long flags of `host run --help` with _ for -, and name, modules, config, secrets, allow_hosts, source_env, weight",
                    ));
                }
                where_is.insert(format!("--{flag}"), line);
                let flag = format!("--{flag}");
                match value {
                    toml::Value::Boolean(true) => argv.push(flag),
                    toml::Value::Boolean(false) => {}
                    toml::Value::Array(items) => {
                        for item in items {
                            push_flag(&mut argv, &flag, item).map_err(at)?;
                        }
                    }
                    value => push_flag(&mut argv, &flag, value).map_err(at)?,
                }
            }
        }
    }
    let matches = command.try_get_matches_from(&argv).map_err(|err| {
        let flag = err
            .get(clap::error::ContextKind::InvalidArg)
            .map(|arg| arg.to_string())
            .unwrap_or_default();
        let flag = flag.split_whitespace().next().unwrap_or_default();
        let key = flag.trim_start_matches('-').replace('-', "_");
        let place = where_is
            .get(flag)
            .map(|line| format!("line {line}, key {key}: "))
            .unwrap_or_default();
        let message = err.kind().as_str().unwrap_or("invalid value").to_owned();
        let detail = err
            .get(clap::error::ContextKind::InvalidValue)
            .map(|value| format!(" {value}"))
            .unwrap_or_default();
        Error::invalid(format!("{place}{message}{detail} for {key}"))
            .with_hint("pipeline keys take the values of the `host run` flags of the same name")
    })?;
    let args =
        RunArgs::from_arg_matches(&matches).map_err(|err| Error::invalid(err.to_string()))?;
    let mut config = RunConfig::from_args(args)?;
    config.modules_config.module_overrides = overrides;
    Ok(config)
}

/// A module entry: `"path.wasm"` or `{ path = "…", config = {…}, secrets = {…} }`.
fn module_entry(value: &toml::Value) -> Result<(String, ModuleConfig)> {
    match value {
        toml::Value::String(path) => Ok((path.clone(), ModuleConfig::default())),
        toml::Value::Table(table) => {
            let mut own = ModuleConfig::default();
            let mut path = None;
            for (key, value) in table {
                match key.as_str() {
                    "path" => path = Some(scalar(value)?),
                    "config" => {
                        for (key, value) in as_table(value)? {
                            own.values.insert(key.clone(), scalar(value)?);
                        }
                    }
                    "secrets" => {
                        for (key, variable) in as_table(value)? {
                            let variable = scalar(variable)?;
                            let secret = std::env::var(&variable).map_err(|_| {
                                Error::invalid(format!(
                                    "secret {key:?}: environment variable {variable} is not set"
                                ))
                                .with_hint(format!("export {variable}=… before starting host"))
                            })?;
                            own.secrets.insert(key.clone(), secret);
                        }
                    }
                    other => {
                        return Err(Error::invalid(format!("module key {other:?} is unknown"))
                            .with_hint("a module is \"path.wasm\" or { path = \"…\", config = {…}, secrets = {…} }"))
                    }
                }
            }
            let path = path.ok_or_else(|| {
                Error::invalid("a module table has no path")
                    .with_hint("write { path = \"….wasm\" }")
            })?;
            Ok((path, own))
        }
        _ => Err(Error::invalid("a module is not a path or a table")
            .with_hint("write modules = [\"a.wasm\", { path = \"b.wasm\", config = {…} }]")),
    }
}

fn push_flag(argv: &mut Vec<String>, flag: &str, value: &toml::Value) -> Result<()> {
    argv.push(arg(flag, scalar(value)?));
    Ok(())
}

/// `--flag=value` as one argument, so that a value that starts with `-` is not read as a flag.
fn arg(flag: &str, value: impl std::fmt::Display) -> String {
    format!("{flag}={value}")
}

/// A string, number or boolean as the command line would write it.
fn scalar(value: &toml::Value) -> Result<String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(number) => Ok(number.to_string()),
        toml::Value::Float(number) => Ok(number.to_string()),
        toml::Value::Boolean(flag) => Ok(flag.to_string()),
        other => Err(Error::invalid(format!(
            "expected a string or a number, found {}",
            other.type_str()
        ))
        .with_hint("write the value as on the command line, e.g. \"30s\" or 500")),
    }
}

fn as_array(value: &toml::Value) -> Result<&Vec<toml::Value>> {
    value.as_array().ok_or_else(|| {
        Error::invalid(format!("expected an array, found {}", value.type_str()))
            .with_hint("write [\"…\", \"…\"]")
    })
}

fn as_table(value: &toml::Value) -> Result<&toml::Table> {
    value.as_table().ok_or_else(|| {
        Error::invalid(format!("expected a table, found {}", value.type_str()))
            .with_hint("write { key = \"value\" }")
    })
}

/// The 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    //! Unit tests of the pipelines file: parsing, defaults, errors that name the line.

    use super::*;

    fn parse(text: &str) -> Result<PipelinesFile> {
        PipelinesFile::parse(Path::new("tidemark.toml"), text)
    }

    #[test]
    fn pipelines_take_the_flags_of_host_run() {
        let file = parse(
            r#"
    state = "sqlite://state.db"
    max_batches_in_flight = 3

    [defaults]
    batch_size = 250
    poll = "2s"

    [[pipeline]]
    name = "a"
    source = "sqlite://a.db"
    table = "users"
    modules = ["m1.wasm", { path = "m2.wasm", config = { url = "http://x" } }]
    config = { list = "abc", n = 5 }
    allow_hosts = ["https://api.example.com"]
    max_retries = 2
    on_poison = "stop"

    [[pipeline]]
    name = "b"
    source = "postgres://postgres@127.0.0.1/test"
    table = "app.orders"
    batch_size = 10
    "#,
        )
        .unwrap();
        assert_eq!(file.state_url, "sqlite://state.db");
        assert_eq!(file.max_batches_in_flight, 3);
        let [a, b] = &file.pipelines[..] else {
            panic!("{:?}", file.pipelines)
        };
        assert_eq!(a.pipeline, "a");
        assert_eq!(a.sync.batch_size, 250);
        assert_eq!(a.sync.poll, Duration::from_secs(2));
        assert_eq!(a.sync.retry.max_retries, 2);
        assert_eq!(
            a.sync.retry.on_poison,
            crate::delivery::retry::OnPoison::Stop
        );
        assert_eq!(
            b.sync.retry.on_poison,
            crate::delivery::retry::OnPoison::Park
        );
        assert_eq!(a.modules_config.modules.len(), 2);
        assert_eq!(a.modules_config.module_config(0).values.get("url"), None);
        assert_eq!(
            a.modules_config
                .module_config(1)
                .values
                .get("url")
                .map(String::as_str),
            Some("http://x")
        );
        assert_eq!(
            a.modules_config
                .module_config(1)
                .values
                .get("n")
                .map(String::as_str),
            Some("5")
        );
        assert_eq!(a.modules_config.http.allow.len(), 1);
        assert_eq!(b.sync.batch_size, 10);
        assert_eq!(b.state_url, "sqlite://state.db");
    }

    #[test]
    fn mistakes_name_the_line_and_the_key() {
        let base = "[[pipeline]]\nname = \"a\"\nsource = \"sqlite://a.db\"\ntable = \"t\"\n";
        for (extra, says) in [
            ("batchsize = 5\n", "line 5, key batchsize"),
            ("batch_size = \"lots\"\n", "line 5, key batch_size"),
            ("batch_size = 0\n", "batch size 0"),
            ("batch_size = -1\n", "line 5, key batch_size"),
            ("state = \"x\"\n", "key state"),
            ("modules = 5\n", "expected an array"),
        ] {
            let err = parse(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(err.contains(says), "{extra:?}: {err}");
            assert!(err.contains("tidemark.toml:1: pipeline \"a\""), "{err}");
        }
        let err = parse("stat = 1\n").unwrap_err().to_string();
        assert!(
            err.contains("tidemark.toml:1") && err.contains("stat"),
            "{err}"
        );
        let err = parse(&format!(
            "{base}[[pipeline]]\nname = \"a\"\nsource = \"sqlite://b.db\"\ntable = \"t\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("two pipelines are named \"a\""), "{err}");
        // A key the pipeline sets over a default: the pipeline's line, not the default's.
        let err = parse(&format!(
            "[defaults]\npoll = \"1s\"\n\n{base}poll = \"often\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 8, key poll"), "{err}");
    }

    #[test]
    fn passwords_stay_out_of_the_file() {
        for url in [
            "postgres://u:hunter2@db/x",
            "postgres://u@db/x?password=hunter2",
        ] {
            let base = "[[pipeline]]\nname = \"a\"\ntable = \"t\"\n";
            let err = parse(&format!("{base}source = \"{url}\"\n")).unwrap_err();
            assert!(err.to_string().contains("password"), "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(err.hint().unwrap_or_default().contains("source_env"));
        }
    }

    #[test]
    fn a_pipeline_weighs_one_unless_the_file_says_otherwise() {
        let pipeline = |name: &str, extra: &str| {
            format!(
                "[[pipeline]]\nname = \"{name}\"\nsource = \"sqlite://a.db\"\ntable = \"t\"\n{extra}\n"
            )
        };
        let text = format!(
            "[defaults]\nweight = 2\n\n{}{}{}",
            pipeline("heavy", "weight = 5"),
            pipeline("default", ""),
            pipeline("light", "weight = 1")
        );
        let file = parse(&text).unwrap();
        assert_eq!(
            file.weighted(),
            [
                ("heavy".to_owned(), 5),
                ("default".to_owned(), 2),
                ("light".to_owned(), 1)
            ]
        );
        assert_eq!(
            parse(&pipeline("plain", "")).unwrap().weighted(),
            [("plain".to_owned(), 1)]
        );
        for bad in [
            "weight = 0",
            "weight = -1",
            "weight = \"big\"",
            "weight = 1.5",
        ] {
            let err = parse(&pipeline("bad", bad)).unwrap_err();
            assert!(
                err.to_string().contains("line 5, key weight"),
                "{bad}: {err}"
            );
            assert!(err.hint().unwrap().contains("weight = 2"), "{bad}: {err}");
        }
    }
}
