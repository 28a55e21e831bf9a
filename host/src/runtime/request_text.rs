//! A cap on the text a destination stores in an HTTP request before sending it: its method and
//! its authority (`host:port`).
//!
//! wasmtime-wasi-http keeps both as the module gave them. The `http` crate caps a request's
//! path at 64 KiB, but neither of these, and a module may hold as many unsent requests as it
//! has host resources (1,024 at the default `--memory-limit`): without a cap, each could hold
//! as much text as one host call may hand over (see `transfer.rs`), many times the module's
//! own memory in all. Methods are short tokens and authorities are host names of at most 253
//! bytes, so the cap refuses nothing real; a refused one is the `error` result WASI gives
//! for an invalid method or authority.

use wasmtime::component::{Linker, Resource};
use wasmtime::StoreContextMut;
use wasmtime_wasi_http::p2::bindings::http::types::{HostOutgoingRequest, Method, OutgoingRequest};
use wasmtime_wasi_http::WasiHttpView;

/// The longest method or authority a request may hold, in bytes.
pub const MAX_REQUEST_TEXT: usize = 1 << 10;

/// The WASI interface whose setters are capped, as the linker names it.
const TYPES: &str = "wasi:http/types@0.2.12";

/// Replaces wasi:http's `set-method` and `set-authority` in `linker` (where wasi:http is
/// already linked) with versions that refuse text past [`MAX_REQUEST_TEXT`], then do as
/// wasi:http does.
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
    types.func_wrap(
        "[method]outgoing-request.set-authority",
        |mut store: StoreContextMut<'_, T>,
         (request, authority): (Resource<OutgoingRequest>, Option<String>)| {
            if authority
                .as_ref()
                .is_some_and(|text| text.len() > MAX_REQUEST_TEXT)
            {
                return Ok((Err(()),));
            }
            let set = HostOutgoingRequest::set_authority(
                &mut store.data_mut().http(),
                request,
                authority,
            );
            Ok((set?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
