//! Turns the command line (and `DATABASE_URL`) into one validated configuration, once.

use std::path::PathBuf;

use crate::cli::RunArgs;
use crate::error::{Error, Result};
use crate::source::{Driver, TableRef, TableSpec};
use crate::sync::SyncOptions;

/// The largest batch accepted: memory grows with the batch, not with the table.
pub const MAX_BATCH_SIZE: usize = 1_000_000;

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub source_url: String,
    pub driver: Driver,
    pub table: TableSpec,
    pub state_url: String,
    pub pipeline: String,
    pub output: Option<PathBuf>,
    pub sync: SyncOptions,
}

impl RunConfig {
    pub fn from_args(args: RunArgs) -> Result<Self> {
        let source_url = args.source.filter(|url| !url.is_empty()).ok_or_else(|| {
            Error::invalid("no source database given").with_hint(
                "pass --source URL (postgres://…, mysql://…, sqlite://PATH) or set DATABASE_URL",
            )
        })?;
        let driver = Driver::from_url(&source_url)?;
        let table = TableRef::parse(&args.table)?;
        if args.batch_size == 0 || args.batch_size > MAX_BATCH_SIZE {
            return Err(
                Error::invalid(format!("batch size {} is out of range", args.batch_size))
                    .with_hint(format!("pass --batch-size between 1 and {MAX_BATCH_SIZE}")),
            );
        }
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
            driver,
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
            sync: SyncOptions {
                batch_size: args.batch_size,
                poll: args.poll,
                settle: args.settle,
                once: args.once,
                null_cursor: args.null_cursor,
            },
        })
    }
}
