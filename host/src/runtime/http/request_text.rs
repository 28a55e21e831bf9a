//! A cap on the text a destination stores in an HTTP request before sending it: its method,
//! its authority (`host:port`) and its path with query.
//!
//! wasmtime-wasi-http keeps them as the module gave them. The `http` crate caps a path at
//! 64 KiB but neither of the others, and a module may hold as many unsent requests as it has
//! host resources (1,024 at the default `--memory-limit`): without a cap, each could hold as
//! much text as one host call may hand over (see `transfer.rs`), many times the module's own
//! memory in all. Methods are short tokens, authorities host names of at most 253 bytes, and
//! common servers refuse request lines past 8 KiB, so the caps refuse nothing real; a refused
//! text gets the `error` result WASI gives for an invalid one.

use wasmtime::component::{Linker, LinkerInstance, Resource};
use wasmtime::StoreContextMut;
use wasmtime_wasi_http::p2::bindings::http::types::{HostOutgoingRequest, Method, OutgoingRequest};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

/// The longest method or authority a request may hold, in bytes.
pub const MAX_REQUEST_TEXT: usize = 1 << 10;
/// The longest path with query a request may hold, in bytes.
pub const MAX_PATH: usize = 16 << 10;

/// The WASI interface whose setters are capped, as the linker names it.
const TYPES: &str = "wasi:http/types@0.2.12";

/// Replaces wasi:http's `set-method`, `set-authority` and `set-path-with-query` in `linker`
/// (where wasi:http is already linked) with versions that refuse text past
/// [`MAX_REQUEST_TEXT`] or [`MAX_PATH`], then do as wasi:http does.
pub fn cap_request_text<T: WasiHttpView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(TYPES)?;
    types.func_wrap(
        "[method]outgoing-request.set-method",
        |mut store: StoreContextMut<'_, T>,
         (request, method): (Resource<OutgoingRequest>, Method)| {
            if matches!(&method, Method::Other(text) if text.len() > MAX_REQUEST_TEXT) {
                return Ok((Err(()),));
            }
            let set =
                HostOutgoingRequest::set_method(&mut store.data_mut().http(), request, method);
            Ok((set?,))
        },
    )?;
    cap_optional_text(
        &mut types,
        "set-authority",
        MAX_REQUEST_TEXT,
        |http, request, text| HostOutgoingRequest::set_authority(http, request, text),
    )?;
    cap_optional_text(
        &mut types,
        "set-path-with-query",
        MAX_PATH,
        |http, request, text| HostOutgoingRequest::set_path_with_query(http, request, text),
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The setter `[method]outgoing-request.{name}` of an optional text, capped at `max` bytes.
fn cap_optional_text<T: WasiHttpView + 'static>(
    types: &mut LinkerInstance<'_, T>,
    name: &str,
    max: usize,
    set: impl Fn(
            &mut WasiHttpCtxView<'_>,
            Resource<OutgoingRequest>,
            Option<String>,
        ) -> wasmtime::Result<Result<(), ()>>
        + Send
        + Sync
        + 'static,
) -> wasmtime::Result<()> {
    types.func_wrap(
        &format!("[method]outgoing-request.{name}"),
        move |mut store: StoreContextMut<'_, T>,
              (request, text): (Resource<OutgoingRequest>, Option<String>)| {
            if text.as_ref().is_some_and(|text| text.len() > max) {
                return Ok((Err(()),));
            }
            Ok((set(&mut store.data_mut().http(), request, text)?,))
        },
    )
}
