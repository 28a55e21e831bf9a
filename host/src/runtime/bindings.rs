//! Host-side bindings of `wit/processor.wit`, one module per world.

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

pub use transform::tidemark::processor::host::{Host as HostApi, Level};
pub use transform::tidemark::processor::types::{Batch, DeliveryError, Rejection};
