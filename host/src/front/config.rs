//! Turns the command line (and `DATABASE_URL`) into one validated configuration, once.

use crate::delivery::retry::RetryPolicy;
use crate::engine::settings::{ModulesConfig, RunConfig, SyncOptions};
use crate::front::cli::{CompileArgs, HttpArgs, ModuleArgs, NullCursor, RetryPolicyArgs, RunArgs};
use crate::model::error::{Error, Result};
use crate::model::NullCursorPolicy;
use crate::runtime::limits::{parse_size, CompileLimits, Limits};
use crate::runtime::{HttpOptions, ModuleConfig, Origin};
use crate::source::{Driver, TableRef, TableSpec};

/// The largest batch accepted: memory grows with the batch, not with the table.
pub const MAX_BATCH_SIZE: usize = 1_000_000;

impl ModulesConfig {
    /// Validates the flags; reads each secret from its environment variable now, so that a
    /// missing one stops the run before any row is read.
    pub fn from_args(args: ModuleArgs) -> Result<Self> {
        let mut config = ModuleConfig::default();
        for pair in &args.set {
            let (key, value) = split_pair(pair, "--set", "KEY=VALUE")?;
            config.values.insert(key.to_owned(), value.to_owned());
        }
        for pair in &args.secrets {
            let (key, variable) = split_pair(pair, "--secret", "KEY=ENV_VAR")?;
            let value = std::env::var(variable).map_err(|_| {
                Error::invalid(format!(
                    "secret {key:?}: environment variable {variable} is not set"
                ))
                .with_hint(format!(
                    "export {variable}=… before starting host, or fix --secret {key}=ENV_VAR"
                ))
            })?;
            config.secrets.insert(key.to_owned(), value);
        }
        let memory = parse_size(&args.memory_limit).map_err(|err| {
            Error::invalid(format!("--memory-limit: {err}"))
                .with_hint("pass --memory-limit such as 128MiB or 1GiB")
        })?;
        if !(1 << 20..=4 << 30).contains(&memory) {
            return Err(Error::invalid(format!(
                "--memory-limit {} is out of range",
                args.memory_limit
            ))
            .with_hint("pass --memory-limit between 1MiB and 4GiB"));
        }
        let log_bytes = parse_size(&args.max_log_bytes).map_err(|err| {
            Error::invalid(format!("--max-log-bytes: {err}"))
                .with_hint("pass --max-log-bytes such as 64KiB or 1MiB")
        })?;
        if log_bytes > 1 << 30 || args.max_log_lines > 10_000_000 {
            return Err(Error::invalid(format!(
                "a log budget of {} lines or {} bytes per call is out of range",
                args.max_log_lines, args.max_log_bytes
            ))
            .with_hint("pass --max-log-lines up to 10000000 and --max-log-bytes up to 1GiB"));
        }
        if args.deadline.is_zero() {
            return Err(
                Error::invalid("--deadline is zero").with_hint("pass --deadline such as 30s")
            );
        }
        Ok(ModulesConfig {
            http: http_options(&args.http)?,
            module_overrides: Vec::new(),
            modules: args.modules,
            config,
            limits: Limits {
                memory,
                deadline: args.deadline,
                fuel: args.fuel,
                log_lines: args.max_log_lines,
                log_bytes,
                compile: compile_limits(&args.compile)?,
            },
            cache_dir: args
                .cache_dir
                .or_else(crate::runtime::engine::default_cache_dir),
        })
    }
}

/// `--max-module-size` and `--compile-timeout`, checked.
pub fn compile_limits(args: &CompileArgs) -> Result<CompileLimits> {
    let fix_size = "pass --max-module-size between 1KiB and 1GiB, such as 64MiB";
    let max_module_size = parse_size(&args.max_module_size)
        .map_err(|err| Error::invalid(format!("--max-module-size: {err}")).with_hint(fix_size))?;
    if !(1 << 10..=1 << 30).contains(&max_module_size) {
        return Err(Error::invalid(format!(
            "--max-module-size {} is out of range",
            args.max_module_size
        ))
        .with_hint(fix_size));
    }
    if args.compile_timeout.is_zero() {
        return Err(Error::invalid("--compile-timeout is zero")
            .with_hint("pass --compile-timeout such as 5m"));
    }
    Ok(CompileLimits {
        max_module_size,
        timeout: args.compile_timeout,
    })
}

fn http_options(args: &HttpArgs) -> Result<HttpOptions> {
    let allow = args
        .allow_hosts
        .iter()
        .map(|entry| Origin::parse(entry))
        .collect::<Result<Vec<_>>>()?;
    let max_response_bytes = parse_size(&args.max_response_size).map_err(|err| {
        Error::invalid(format!("--max-response-size: {err}"))
            .with_hint("pass --max-response-size such as 1MiB or 64MiB")
    })?;
    let max_request_bytes = parse_size(&args.max_request_size).map_err(|err| {
        Error::invalid(format!("--max-request-size: {err}"))
            .with_hint("pass --max-request-size such as 1MiB or 64MiB")
    })?;
    if max_request_bytes == 0 {
        return Err(Error::invalid("--max-request-size is zero")
            .with_hint("pass --max-request-size such as 1MiB or 64MiB"));
    }
    if args.http_timeout.is_zero() {
        return Err(
            Error::invalid("--http-timeout is zero").with_hint("pass --http-timeout such as 30s")
        );
    }
    if args.max_in_flight == 0 {
        return Err(
            Error::invalid("--max-in-flight is zero").with_hint("pass --max-in-flight 1 or more")
        );
    }
    if args.max_requests_per_batch == 0 {
        return Err(Error::invalid("--max-requests-per-batch is zero")
            .with_hint("pass --max-requests-per-batch 1 or more"));
    }
    if let Some(rate) = args.max_requests_per_second {
        if !(rate.is_finite() && rate > 0.0 && rate <= 1e6) {
            return Err(Error::invalid(format!(
                "--max-requests-per-second {rate} is out of range"
            ))
            .with_hint("pass --max-requests-per-second above 0, such as 10 or 0.5"));
        }
    }
    Ok(HttpOptions {
        allow,
        timeout: args.http_timeout,
        max_response_bytes,
        max_request_bytes,
        max_in_flight: args.max_in_flight,
        max_requests_per_batch: args.max_requests_per_batch,
        requests_per_second: args.max_requests_per_second,
    })
}

/// Refuses a `--batch-size` of 0 or above [`MAX_BATCH_SIZE`].
pub fn check_batch_size(batch_size: usize) -> Result<()> {
    if batch_size == 0 || batch_size > MAX_BATCH_SIZE {
        return Err(
            Error::invalid(format!("batch size {batch_size} is out of range"))
                .with_hint(format!("pass --batch-size between 1 and {MAX_BATCH_SIZE}")),
        );
    }
    Ok(())
}

/// The retry policy from its flags.
pub fn retry_policy(args: &RetryPolicyArgs) -> Result<RetryPolicy> {
    if args.retry_backoff.is_zero() {
        return Err(Error::invalid("--retry-backoff is zero")
            .with_hint("pass --retry-backoff such as 1s or 100ms"));
    }
    Ok(RetryPolicy {
        max_retries: args.max_retries,
        backoff: args.retry_backoff,
        on_poison: args.on_poison,
    })
}

fn split_pair<'a>(pair: &'a str, flag: &str, form: &str) -> Result<(&'a str, &'a str)> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key, value)),
        _ => Err(Error::invalid(format!("{flag} {pair:?} is not {form}"))
            .with_hint(format!("pass {flag} {form}"))),
    }
}

impl RunConfig {
    pub fn from_args(args: RunArgs) -> Result<Self> {
        let source_url = args.source.filter(|url| !url.is_empty()).ok_or_else(|| {
            Error::invalid("no source database given").with_hint(
                "pass --source URL (postgres://…, mysql://…, sqlite://PATH) or set DATABASE_URL",
            )
        })?;
        // An unknown scheme is refused now, before anything is opened.
        Driver::from_url(&source_url)?;
        let table = args.table.as_deref().ok_or_else(|| {
            Error::invalid("no table given").with_hint(
                "pass --table NAME, or --config tidemark.toml to run the pipelines it lists",
            )
        })?;
        let table = TableRef::parse(table)?;
        check_batch_size(args.batch_size)?;
        for (flag, column) in [
            ("--cursor", Some(&args.cursor)),
            ("--key", args.key.as_ref()),
            ("--deleted-column", args.deleted_column.as_ref()),
        ] {
            if column.is_some_and(|name| name.is_empty()) {
                return Err(Error::invalid(format!("{flag} names no column"))
                    .with_hint(format!("pass {flag} COLUMN")));
            }
        }
        if args.key.as_deref() == Some(args.cursor.as_str()) {
            return Err(Error::invalid(format!(
                "column {:?} cannot be both the cursor and the key",
                args.cursor
            ))
            .with_hint("pass --key with a unique column other than the cursor"));
        }
        let pipeline = args.pipeline.unwrap_or_else(|| table.to_string());
        if pipeline.is_empty() {
            return Err(
                Error::invalid("the pipeline name is empty").with_hint("pass --pipeline NAME")
            );
        }
        Ok(RunConfig {
            source_url,
            table: TableSpec {
                table,
                cursor: args.cursor,
                key: args.key,
                deleted_column: args.deleted_column,
                time_zone: args.time_zone,
            },
            state_url: args.state.state,
            pipeline,
            output: args.output,
            modules_config: ModulesConfig::from_args(args.modules_config)?,
            sync: SyncOptions {
                batch_size: args.batch_size,
                poll: args.poll,
                settle: args.settle,
                once: args.once,
                null_cursor: match args.null_cursor {
                    NullCursor::Refuse => NullCursorPolicy::Refuse,
                    NullCursor::Oldest => NullCursorPolicy::Oldest,
                },
                retry: retry_policy(&args.retry)?,
                detect_deletes: args.detect_deletes,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;
    use crate::cluster::settings::PipelinesFile;

    #[test]
    fn secrets_reach_the_modules_the_file_says() {
        // Variables of this test alone: tests run in parallel in one process.
        for (variable, value) in [
            ("TM_SCOPE_TEST_SHARED", "shared-value"),
            ("TM_SCOPE_TEST_OWN", "own-value"),
            ("TM_SCOPE_TEST_DEFAULT", "default-value"),
        ] {
            std::env::set_var(variable, value);
        }
        let file = PipelinesFile::parse(
            Path::new("tidemark.toml"),
            r#"
[defaults]
secrets = { fallback = "TM_SCOPE_TEST_DEFAULT" }

[[pipeline]]
name = "a"
source = "sqlite://a.db"
table = "t"
modules = ["first.wasm", { path = "last.wasm", secrets = { own = "TM_SCOPE_TEST_OWN" } }]
secrets = { shared = "TM_SCOPE_TEST_SHARED" }

[[pipeline]]
name = "b"
source = "sqlite://b.db"
table = "t"
modules = ["first.wasm", "last.wasm"]
"#,
        )
        .unwrap();
        let keys = |pipeline: &RunConfig, index: usize| -> Vec<String> {
            let config = pipeline.modules_config.module_config(index);
            config.secrets.keys().cloned().collect()
        };
        let [a, b] = &file.pipelines[..] else {
            panic!("{:?}", file.pipelines)
        };
        // A pipeline's secrets reach every module of its chain (replacing those of
        // [defaults]); a module's own reach that module alone.
        assert_eq!(keys(a, 0), ["shared"]);
        assert_eq!(keys(a, 1), ["own", "shared"]);
        assert_eq!(
            a.modules_config
                .module_config(1)
                .secrets
                .get("own")
                .map(String::as_str),
            Some("own-value")
        );
        // [defaults] secrets reach every module of a pipeline that sets none of its own.
        assert_eq!(keys(b, 0), ["fallback"]);
        assert_eq!(keys(b, 1), ["fallback"]);
        // And no value shows in the configuration's debug output.
        let shown = format!("{:?}", file.pipelines);
        assert!(!shown.contains("-value"), "{shown}");
    }

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        http: HttpArgs,
    }

    fn http(args: &[&str]) -> Result<HttpOptions> {
        let flags = Flags::try_parse_from(std::iter::once("host").chain(args.iter().copied()))
            .expect("flags parse");
        http_options(&flags.http)
    }

    #[test]
    fn request_caps_have_defaults_and_refuse_zero() {
        let options = http(&[]).unwrap();
        assert_eq!(options.max_request_bytes, 16 << 20);
        assert_eq!(options.max_requests_per_batch, 1000);
        assert_eq!(
            http(&["--max-request-size", "1MiB"])
                .unwrap()
                .max_request_bytes,
            1 << 20
        );
        for (flag, value) in [
            ("--max-request-size", "0"),
            ("--max-request-size", "lots"),
            ("--max-requests-per-batch", "0"),
        ] {
            let err = http(&[flag, value]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
            assert!(err.hint().unwrap_or_default().contains(flag), "{err:?}");
        }
    }
}
