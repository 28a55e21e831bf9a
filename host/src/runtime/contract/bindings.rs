//! Host-side bindings of the contract, one module per world and version: `0.2.0`
//! (`wit/processor.wit`) and `0.1.0` (`wit/legacy/0.1.0`, for components built before 0.2).
//!
//! The host links both versions of the `host` interface and calls each component through the
//! export indices of its own version (`runtime/mod.rs`), so that `lifecycle`, which the 0.2
//! worlds export, stays optional: a component without it is loaded as one that declares no
//! configuration keys and has nothing to check at start.

pub mod transform {
    wasmtime::component::bindgen!({
        world: "transform",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
    });
}

pub mod destination {
    wasmtime::component::bindgen!({
        world: "destination",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "tidemark:processor/host": super::transform::tidemark::processor::host,
            "tidemark:processor/types": super::transform::tidemark::processor::types,
        },
    });
}

/// Contract `0.1.0`. Its WIT lives apart from the current one; its `deps` is a link to
/// `wit/deps`, the WASI packages it imports.
pub mod legacy {
    pub mod transform {
        wasmtime::component::bindgen!({
            world: "transform",
            path: "../wit/legacy/0.1.0",
            imports: { default: async },
            exports: { default: async },
        });
    }

    pub mod destination {
        wasmtime::component::bindgen!({
            world: "destination",
            path: "../wit/legacy/0.1.0",
            imports: { default: async },
            exports: { default: async },
            with: {
                "wasi:http": wasmtime_wasi_http::p2::bindings::http,
                "wasi:io": wasmtime_wasi::p2::bindings::io,
                "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
                "tidemark:processor/host": super::transform::tidemark::processor::host,
                "tidemark:processor/types": super::transform::tidemark::processor::types,
            },
        });
    }

    pub use transform::tidemark::processor::host::{Host as HostApi, Level};
    pub use transform::tidemark::processor::types::{Batch, DeliveryError, Rejection};
}

pub use transform::exports::tidemark::processor::lifecycle::GuestIndices as LifecycleIndices;
pub use transform::tidemark::processor::host::{Host as HostApi, Level};
pub use transform::tidemark::processor::types::{
    Batch, ConfigKey, ProcessorError, Rejection, Retry, Transformed,
};

/// The export indices of the interface a component implements, by world and version.
#[derive(Clone)]
pub enum Exports {
    Transform(transform::exports::tidemark::processor::transformer::GuestIndices),
    Destination(destination::exports::tidemark::processor::deliverer::GuestIndices),
    LegacyTransform(legacy::transform::exports::tidemark::processor::transformer::GuestIndices),
    LegacyDestination(legacy::destination::exports::tidemark::processor::deliverer::GuestIndices),
}

impl legacy::Batch {
    /// The same batch in the form of contract 0.1 (the record did not change).
    pub fn from_current(batch: &Batch) -> Self {
        legacy::Batch {
            id: batch.id.clone(),
            pipeline: batch.pipeline.clone(),
            rows: batch.rows.clone(),
        }
    }
}

impl From<legacy::Rejection> for Rejection {
    fn from(rejection: legacy::Rejection) -> Self {
        Rejection {
            index: rejection.index,
            reason: rejection.reason,
        }
    }
}

/// 0.1's delivery error is 0.2's processor error under another name.
impl From<legacy::DeliveryError> for ProcessorError {
    fn from(error: legacy::DeliveryError) -> Self {
        match error {
            legacy::DeliveryError::RetryLater(retry) => ProcessorError::RetryLater(Retry {
                message: retry.message,
                after_ms: retry.after_ms,
            }),
            legacy::DeliveryError::Fatal(message) => ProcessorError::Fatal(message),
        }
    }
}

impl From<legacy::Level> for Level {
    fn from(level: legacy::Level) -> Self {
        match level {
            legacy::Level::Trace => Level::Trace,
            legacy::Level::Debug => Level::Debug,
            legacy::Level::Info => Level::Info,
            legacy::Level::Warn => Level::Warn,
            legacy::Level::Error => Level::Error,
        }
    }
}
