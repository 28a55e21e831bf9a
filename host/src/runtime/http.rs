//! Outbound HTTP for destinations. The policy here refuses every request: a destination reaches
//! the network only through origins the pipeline allows, and no origins can be allowed yet.

use std::future::Future;
use std::sync::Arc;

use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

/// The outbound HTTP policy of one module in one pipeline.
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    module: Arc<str>,
    pipeline: Arc<str>,
}

impl HttpPolicy {
    pub fn new(module: Arc<str>, pipeline: Arc<str>) -> Self {
        HttpPolicy { module, pipeline }
    }
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ),
    wasmtime_wasi_http::Error,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let (module, pipeline) = (&*self.module, &*self.pipeline);
        tracing::warn!(
            module,
            pipeline,
            "refused outbound request to {}: no origin is allowed",
            request.uri()
        );
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
