//! Write [Tidemark](https://example.invalid/tidemark) processors in Rust.
//!
//! A processor is a WebAssembly component that the Tidemark host runs on every batch of rows
//! that changed in a database table. A **transform** reshapes rows on their way; a
//! **destination** delivers them to another system over outbound HTTP. This crate turns a plain
//! function into either, against the WIT contract in `wit/processor.wit`.
//!
//! ```no_run
//! use tidemark_sdk::{Batch, ConfigKey, Result, Transformed};
//!
//! const KEYS: &[ConfigKey] = &[ConfigKey::optional("column", "the column to shout (default name)")];
//!
//! /// Drops deleted rows, rejects rows without a text `name` and upper-cases the others.
//! fn shout(batch: Batch) -> Result<Transformed> {
//!     let column = tidemark_sdk::config("column").unwrap_or_else(|| "name".into());
//!     let mut out = Transformed::new();
//!     for (index, mut change) in batch.changes.into_iter().enumerate() {
//!         if change.is_delete() {
//!             continue;
//!         }
//!         let Some(text) = change.row.get(&column).and_then(|v| v.as_str()) else {
//!             out.reject(index, format!("no text in column {column:?}"));
//!             continue;
//!         };
//!         let loud = text.to_uppercase();
//!         change.row.insert(column.clone(), loud.into());
//!         out.push(change);
//!     }
//!     Ok(out)
//! }
//!
//! tidemark_sdk::transform!(shout, keys = KEYS);
//! ```
//!
//! Build it as a `cdylib` for the `wasm32-wasip2` target:
//!
//! ```text
//! rustup target add wasm32-wasip2
//! cargo build --release --target wasm32-wasip2
//! host test --module target/wasm32-wasip2/release/shout.wasm --input rows.json
//! ```
//!
//! Rows arrive as [`Change`]s: an [`Op`] (upsert or delete) and the row as a JSON object. Read a
//! row as your own type with [`Change::row_as`]; build one from a type with [`Change::from_row`].
//! Configuration (`--set key=value`) and secrets (`--secret key=ENV_VAR`) come from
//! [`config`]; [`log`] writes to the host's log, tagged with the module and pipeline.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
pub use serde_json::{json, Map, Value};

mod error;
mod export;
pub use error::{Error, Result};
#[doc(hidden)]
pub use export::__private;
pub use export::{ConfigKey, TransformOutput};

#[doc(hidden)]
pub use tidemark_sdk_wit as transform;

#[doc(hidden)]
pub mod destination {
    wit_bindgen::generate!({
        world: "destination",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "tidemark_sdk::destination",
        with: {
            "tidemark:processor/host@0.2.0": tidemark_sdk_wit::tidemark::processor::host,
            "tidemark:processor/types@0.2.0": tidemark_sdk_wit::tidemark::processor::types,
        },
        generate_all,
    });
}

pub mod http;
pub mod raw_rows;

use transform::tidemark::processor::host as wit_host;
use transform::tidemark::processor::types as wit_types;

/// Whether a row changed or was (soft-)deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Upsert,
    Delete,
}

/// One row of a batch with what happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change<T = Map<String, Value>> {
    pub op: Op,
    pub row: T,
}

impl Change {
    /// The row as your own type.
    pub fn row_as<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(T::deserialize(Value::Object(self.row.clone()))?)
    }

    /// A change whose row is `row` serialized; the row must serialize to a JSON object.
    pub fn from_row<T: Serialize>(op: Op, row: &T) -> Result<Self> {
        match serde_json::to_value(row)? {
            Value::Object(row) => Ok(Change { op, row }),
            other => Err(Error::fatal(format!(
                "a row must be a JSON object, not {other}"
            ))),
        }
    }

    pub fn is_delete(&self) -> bool {
        self.op == Op::Delete
    }
}

/// One batch of rows, as the host hands it on.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The same for every delivery of the same rows: send it as an idempotency key.
    pub id: String,
    pub pipeline: String,
    pub changes: Vec<Change>,
}

impl Batch {
    fn from_wit(batch: wit_types::Batch) -> Result<Self> {
        let changes = serde_json::from_str(&batch.rows).map_err(|err| {
            Error::fatal(format!("batch {}: rows are not valid: {err}", batch.id))
        })?;
        Ok(Batch {
            id: batch.id,
            pipeline: batch.pipeline,
            changes,
        })
    }
}

/// A batch with its rows as the JSON array text the host sent, for transforms that want to
/// skip parsing (see [`transform_raw!`]).
#[derive(Debug, Clone)]
pub struct RawBatch {
    pub id: String,
    pub pipeline: String,
    /// `[{"op": "upsert" | "delete", "row": {...}}, ...]`
    pub rows: String,
}

/// A row a processor did not take: the host keeps it as a dead letter, with the module and
/// the reason, for `host retry`; the rest of the batch goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Position of the row in [`Batch::changes`] (the batch as this module received it).
    pub index: u32,
    pub reason: String,
}

/// What a transform hands on: the rows to pass on and the input rows it rejected.
///
/// `rows` is a `Vec<Change>` (built with [`Transformed::push`]) or, for
/// [`transform_raw!`], the JSON array text ([`Transformed::raw`]). A rejected row should not
/// also be passed on.
#[derive(Debug, Clone, PartialEq)]
pub struct Transformed<R = Vec<Change>> {
    pub rows: R,
    pub rejections: Vec<Rejection>,
}

impl Transformed {
    pub fn new() -> Self {
        Transformed {
            rows: Vec::new(),
            rejections: Vec::new(),
        }
    }

    /// Passes `change` on.
    pub fn push(&mut self, change: Change) {
        self.rows.push(change);
    }
}

impl Default for Transformed {
    fn default() -> Self {
        Self::new()
    }
}

impl Transformed<String> {
    /// Rows passed on as JSON array text, in the `{"op", "row"}` element form.
    pub fn raw(rows: String) -> Self {
        Transformed {
            rows,
            rejections: Vec::new(),
        }
    }
}

impl<R> Transformed<R> {
    /// Rejects input row `index` (its position in the batch received) for `reason`.
    pub fn reject(&mut self, index: usize, reason: impl Into<String>) {
        self.rejections.push(Rejection {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            reason: reason.into(),
        });
    }
}

/// The value of a `--set` key or `--secret` key, if given.
pub fn config(key: &str) -> Option<String> {
    wit_host::config(key)
}

/// The value of a configuration key, or a fatal error that names it.
pub fn require_config(key: &str) -> Result<String> {
    config(key).ok_or_else(|| {
        Error::fatal(format!(
            "missing configuration {key:?}: pass --set {key}=VALUE"
        ))
    })
}

/// Lines in the host's log, tagged with the module and pipeline.
pub mod log {
    use super::wit_host::{log, Level};

    pub fn debug(message: impl AsRef<str>) {
        log(Level::Debug, message.as_ref());
    }

    pub fn info(message: impl AsRef<str>) {
        log(Level::Info, message.as_ref());
    }

    pub fn warn(message: impl AsRef<str>) {
        log(Level::Warn, message.as_ref());
    }

    pub fn error(message: impl AsRef<str>) {
        log(Level::Error, message.as_ref());
    }
}
