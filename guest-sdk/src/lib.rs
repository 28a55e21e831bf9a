//! Write [Tidemark](https://example.invalid/tidemark) processors in Rust.
//!
//! A processor is a WebAssembly component that the Tidemark host runs on every batch of rows
//! that changed in a database table. A **transform** reshapes rows on their way; a
//! **destination** delivers them to another system over outbound HTTP. This crate turns a plain
//! function into either, against the WIT contract in `wit/processor.wit`.
//!
//! ```no_run
//! use tidemark_sdk::{Batch, Change, Result};
//!
//! /// Drops deleted rows and upper-cases every `name`.
//! fn shout(batch: Batch) -> Result<Vec<Change>> {
//!     let mut out = Vec::new();
//!     for mut change in batch.changes {
//!         if change.is_delete() {
//!             continue;
//!         }
//!         if let Some(name) = change.row.get("name").and_then(|v| v.as_str()) {
//!             let loud = name.to_uppercase();
//!             change.row.insert("name".into(), loud.into());
//!         }
//!         out.push(change);
//!     }
//!     Ok(out)
//! }
//!
//! tidemark_sdk::transform!(shout);
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

#[doc(hidden)]
pub mod transform {
    wit_bindgen::generate!({
        world: "transform",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "tidemark_sdk::transform",
    });
}

#[doc(hidden)]
pub mod destination {
    wit_bindgen::generate!({
        world: "destination",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "tidemark_sdk::destination",
        with: {
            "tidemark:processor/host@0.1.0": crate::transform::tidemark::processor::host,
            "tidemark:processor/types@0.1.0": crate::transform::tidemark::processor::types,
        },
        generate_all,
    });
}

pub mod http;
pub mod raw_rows;

use transform::tidemark::processor::host as wit_host;
use transform::tidemark::processor::types as wit_types;

/// The error a processor returns: a message the host shows with the module, pipeline and batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error(message.to_owned())
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error(format!("JSON: {err}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
            other => Err(Error(format!("a row must be a JSON object, not {other}"))),
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
        let changes = serde_json::from_str(&batch.rows)
            .map_err(|err| Error(format!("batch {}: rows are not valid: {err}", batch.id)))?;
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

/// A row a destination did not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Position of the row in [`Batch::changes`].
    pub index: u32,
    pub reason: String,
}

/// Why a destination did not deliver a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// Temporary: the host tries the same batch again, after `after_ms` when given.
    RetryLater {
        message: String,
        after_ms: Option<u64>,
    },
    /// Permanent: the host stops the pipeline with this message.
    Fatal(String),
}

/// An SDK error in a destination (a row that does not parse, a missing configuration key)
/// is one retrying cannot fix: `?` turns it into [`DeliveryError::Fatal`].
impl From<Error> for DeliveryError {
    fn from(err: Error) -> Self {
        DeliveryError::Fatal(err.0)
    }
}

/// The value of a `--set` key or `--secret` key, if given.
pub fn config(key: &str) -> Option<String> {
    wit_host::config(key)
}

/// The value of a configuration key, or an error that names it.
pub fn require_config(key: &str) -> Result<String> {
    config(key).ok_or_else(|| {
        Error(format!(
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

#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use crate::destination::exports::tidemark::processor::deliverer::Guest as DestinationGuest;
    pub use crate::transform::exports::tidemark::processor::transformer::Guest as TransformGuest;
    pub use wit_types::Batch as WitBatch;

    pub fn run_transform(
        batch: WitBatch,
        transform: fn(Batch) -> Result<Vec<Change>>,
    ) -> std::result::Result<String, String> {
        let batch = Batch::from_wit(batch).map_err(|err| err.0)?;
        let changes = transform(batch).map_err(|err| err.0)?;
        serde_json::to_string(&changes).map_err(|err| err.to_string())
    }

    pub fn run_transform_raw(
        batch: WitBatch,
        transform: fn(RawBatch) -> Result<String>,
    ) -> std::result::Result<String, String> {
        transform(RawBatch {
            id: batch.id,
            pipeline: batch.pipeline,
            rows: batch.rows,
        })
        .map_err(|err| err.0)
    }

    pub fn run_destination(
        batch: WitBatch,
        deliver: fn(Batch) -> Result<Vec<Rejection>, DeliveryError>,
    ) -> std::result::Result<Vec<wit_types::Rejection>, wit_types::DeliveryError> {
        let batch = Batch::from_wit(batch).map_err(|err| wit_types::DeliveryError::Fatal(err.0))?;
        match deliver(batch) {
            Ok(rejections) => Ok(rejections
                .into_iter()
                .map(|r| wit_types::Rejection {
                    index: r.index,
                    reason: r.reason,
                })
                .collect()),
            Err(DeliveryError::RetryLater { message, after_ms }) => {
                Err(wit_types::DeliveryError::RetryLater(wit_types::Retry {
                    message,
                    after_ms,
                }))
            }
            Err(DeliveryError::Fatal(message)) => Err(wit_types::DeliveryError::Fatal(message)),
        }
    }
}

/// Exports `fn(Batch) -> Result<Vec<Change>>` as this component's transform.
#[macro_export]
macro_rules! transform {
    ($function:path) => {
        struct __TidemarkTransform;

        impl $crate::__private::TransformGuest for __TidemarkTransform {
            fn transform(
                batch: $crate::__private::WitBatch,
            ) -> ::std::result::Result<::std::string::String, ::std::string::String> {
                $crate::__private::run_transform(batch, $function)
            }
        }

        $crate::transform::export_world!(__TidemarkTransform with_types_in $crate::transform);
    };
}

/// Exports `fn(RawBatch) -> Result<String>` as this component's transform: rows in and out as
/// JSON array text, unparsed. For transforms that pass most rows through untouched or parse
/// them with their own types; the output must keep the `{"op", "row"}` element form.
#[macro_export]
macro_rules! transform_raw {
    ($function:path) => {
        struct __TidemarkRawTransform;

        impl $crate::__private::TransformGuest for __TidemarkRawTransform {
            fn transform(
                batch: $crate::__private::WitBatch,
            ) -> ::std::result::Result<::std::string::String, ::std::string::String> {
                $crate::__private::run_transform_raw(batch, $function)
            }
        }

        $crate::transform::export_world!(__TidemarkRawTransform with_types_in $crate::transform);
    };
}

/// Exports `fn(Batch) -> Result<Vec<Rejection>, DeliveryError>` as this component's destination.
#[macro_export]
macro_rules! destination {
    ($function:path) => {
        struct __TidemarkDestination;

        impl $crate::__private::DestinationGuest for __TidemarkDestination {
            fn deliver(
                batch: $crate::__private::WitBatch,
            ) -> ::std::result::Result<
                ::std::vec::Vec<$crate::transform::tidemark::processor::types::Rejection>,
                $crate::transform::tidemark::processor::types::DeliveryError,
            > {
                $crate::__private::run_destination(batch, $function)
            }
        }

        $crate::destination::export_world!(__TidemarkDestination with_types_in $crate::destination);
    };
}

#[cfg(test)]
mod error_tests {
    use super::*;

    fn row_count(rows: &str) -> Result<usize, DeliveryError> {
        let rows: Vec<Value> = serde_json::from_str(rows).map_err(Error::from)?;
        Ok(rows.len())
    }

    #[test]
    fn sdk_errors_are_std_errors_and_become_fatal_delivery_errors_with_a_question_mark() {
        let boxed: Box<dyn std::error::Error> = Box::new(Error::from("no list_id"));
        assert_eq!(boxed.to_string(), "no list_id");
        assert_eq!(row_count("[1, 2]"), Ok(2));
        assert!(
            matches!(row_count("[1,"), Err(DeliveryError::Fatal(message)) if message.starts_with("JSON")),
            "{:?}",
            row_count("[1,")
        );
    }
}
