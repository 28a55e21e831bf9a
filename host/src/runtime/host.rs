//! What a processor's store holds: WASI with no ambient authority, outbound HTTP behind the
//! pipeline's policy, the memory limiter, and the `tidemark:processor/host` interface (logging
//! and configuration). Secrets given to a module are masked in everything it logs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::{HostApi, Level};
use super::http::HttpPolicy;
use super::limits::MemoryLimiter;

/// Configuration and secrets of one module in one pipeline.
///
/// Secret values never leave through `Debug` (keys only) or `Serialize` (keys and a digest of
/// each value, enough for a configuration fingerprint to change with a secret).
#[derive(Default, Clone)]
pub struct ModuleConfig {
    pub values: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
}

impl ModuleConfig {
    /// Each secret's key with a digest of its value, in key order.
    fn secret_digests(&self) -> BTreeMap<&str, String> {
        use sha2::{Digest, Sha256};
        self.secrets
            .iter()
            .map(|(key, value)| {
                let digest = Sha256::digest(value.as_bytes());
                (
                    key.as_str(),
                    format!("sha256:{}", hex::encode(&digest[..8])),
                )
            })
            .collect()
    }

    fn get(&self, key: &str) -> Option<String> {
        self.secrets
            .get(key)
            .or_else(|| self.values.get(key))
            .cloned()
    }

    /// `text` with every secret value replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in self.secrets.values().filter(|secret| !secret.is_empty()) {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }

    /// Masks every secret in raw bytes (a log line not yet cut or decoded).
    fn redact_bytes(&self, bytes: &mut Vec<u8>) {
        for secret in self.secrets.values().filter(|secret| !secret.is_empty()) {
            replace_all(bytes, secret.as_bytes(), b"***");
        }
    }
}

fn replace_all(bytes: &mut Vec<u8>, needle: &[u8], with: &[u8]) {
    let mut at = 0;
    while let Some(found) = bytes[at..]
        .windows(needle.len())
        .position(|window| window == needle)
    {
        let start = at + found;
        bytes.splice(start..start + needle.len(), with.iter().copied());
        at = start + with.len();
    }
}

/// How many bytes of `text` (secrets already masked) go into a piece of at most `max`: fewer
/// when the piece would end in the beginning of a secret, whose rest may follow, so that no
/// secret is split across two pieces where masking each cannot see it.
fn piece_length(text: &[u8], max: usize, secrets: &[&[u8]]) -> usize {
    let mut cut = max.min(text.len());
    loop {
        let before = cut;
        for secret in secrets {
            if let Some(k) = (1..secret.len().min(cut + 1))
                .rev()
                .find(|&k| text[cut - k..cut] == secret[..k])
            {
                cut -= k;
            }
        }
        if cut == 0 {
            // A secret longer than a piece: cut where asked.
            return max.min(text.len());
        }
        if cut == before {
            return cut;
        }
    }
}

impl std::fmt::Debug for ModuleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleConfig")
            .field("values", &self.values)
            .field(
                "secrets",
                &self
                    .secrets
                    .keys()
                    .map(|key| (key, "***"))
                    .collect::<BTreeMap<_, _>>(),
            )
            .finish()
    }
}

impl serde::Serialize for ModuleConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut config = serializer.serialize_struct("ModuleConfig", 2)?;
        config.serialize_field("values", &self.values)?;
        config.serialize_field("secrets", &self.secret_digests())?;
        config.end()
    }
}

/// Who is talking: the module and the pipeline, for every log line.
#[derive(Debug, Clone)]
pub struct Tag {
    pub module: Arc<str>,
    pub pipeline: Arc<str>,
    pub config: Arc<ModuleConfig>,
}

pub struct ProcessorState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    policy: HttpPolicy,
    pub limiter: MemoryLimiter,
    tag: Tag,
}

impl ProcessorState {
    pub fn new(tag: Tag, memory_cap: u64, policy: HttpPolicy) -> Self {
        // No preopened directories, no environment, no arguments, no sockets: the guest sees
        // only what the host interface and (for destinations) the HTTP policy give it.
        let wasi = WasiCtx::builder()
            .stdout(LogSink::new(tag.clone(), "stdout"))
            .stderr(LogSink::new(tag.clone(), "stderr"))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        ProcessorState {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            policy,
            limiter: MemoryLimiter::new(memory_cap),
            tag,
        }
    }
}

impl WasiView for ProcessorState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ProcessorState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.policy,
        }
    }
}

impl HostApi for ProcessorState {
    async fn log(&mut self, level: Level, message: String) {
        emit(&self.tag, level, &message);
    }

    async fn config(&mut self, key: String) -> Option<String> {
        self.tag.config.get(&key)
    }
}

impl super::bindings::transform::tidemark::processor::types::Host for ProcessorState {}

fn emit(tag: &Tag, level: Level, message: &str) {
    let message = tag.config.redact(message);
    let (module, pipeline) = (&*tag.module, &*tag.pipeline);
    match level {
        Level::Trace => tracing::trace!(module, pipeline, "{message}"),
        Level::Debug => tracing::debug!(module, pipeline, "{message}"),
        Level::Info => tracing::info!(module, pipeline, "{message}"),
        Level::Warn => tracing::warn!(module, pipeline, "{message}"),
        Level::Error => tracing::error!(module, pipeline, "{message}"),
    }
}

/// A guest's stdout or stderr: complete lines go to the host log, tagged. Never reports the
/// stream closed, because a Rust guest panics when a write to stdout fails.
#[derive(Clone)]
struct LogSink {
    tag: Tag,
    stream: &'static str,
    pending: Arc<Mutex<Vec<u8>>>,
}

/// A line longer than this is logged in pieces.
const MAX_LINE: usize = 8 << 10;

impl LogSink {
    fn new(tag: Tag, stream: &'static str) -> Self {
        LogSink {
            tag,
            stream,
            pending: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        pending.extend_from_slice(bytes);
        loop {
            let end = match pending.iter().position(|&b| b == b'\n') {
                Some(newline) => newline,
                None if pending.len() >= MAX_LINE => {
                    // Masked before the cut: a secret across it would be in neither piece whole.
                    let config = &self.tag.config;
                    config.redact_bytes(&mut pending);
                    let secrets: Vec<&[u8]> = config
                        .secrets
                        .values()
                        .map(|secret| secret.as_bytes())
                        .collect();
                    piece_length(&pending, MAX_LINE, &secrets) - 1
                }
                None => break,
            };
            let cut = end.min(pending.len() - 1);
            let line: Vec<u8> = pending.drain(..=cut).collect();
            let text = String::from_utf8_lossy(&line);
            let level = if self.stream == "stderr" {
                Level::Warn
            } else {
                Level::Info
            };
            let text = text.trim_end_matches(['\n', '\r']);
            if !text.is_empty() {
                emit(&self.tag, level, text);
            }
        }
    }
}

impl IsTerminal for LogSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogSink {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogSink {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogSink {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for LogSink {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_wherever_they_appear() {
        let mut config = ModuleConfig::default();
        config.secrets.insert("api_key".into(), "s3cr3t-us6".into());
        config.values.insert("list".into(), "abc".into());
        assert_eq!(
            config.redact("key=s3cr3t-us6; again s3cr3t-us6"),
            "key=***; again ***"
        );
        assert_eq!(config.get("api_key").as_deref(), Some("s3cr3t-us6"));
        assert_eq!(config.get("list").as_deref(), Some("abc"));
        assert_eq!(config.get("missing"), None);
    }

    #[test]
    fn a_secret_across_a_cut_goes_whole_into_the_next_piece() {
        let secret = b"s3cr3t-us6".as_slice();
        // The piece would end in "s3cr": it ends before, and the secret stays whole.
        let text = b"0123456789s3cr3t-us6 and more";
        assert_eq!(piece_length(text, 14, &[secret]), 10);
        assert_eq!(piece_length(text, 14, &[]), 14);
        // Only the start of a secret so far: held back, too.
        assert_eq!(piece_length(b"0123456789s3c", 13, &[secret]), 10);
        // A secret longer than a piece cannot be kept whole.
        assert_eq!(piece_length(b"s3cr3t-us6", 4, &[secret]), 4);
        let mut bytes = b"a s3cr3t-us6 b s3cr3t-us6".to_vec();
        let mut config = ModuleConfig::default();
        config.secrets.insert("k".into(), "s3cr3t-us6".into());
        config.redact_bytes(&mut bytes);
        assert_eq!(bytes, b"a *** b ***");
    }

    #[test]
    fn log_lines_cut_in_pieces_never_show_a_secret() {
        let mut config = ModuleConfig::default();
        config.secrets.insert("k".into(), "s3cr3t-us6".into());
        let tag = Tag {
            module: "m".into(),
            pipeline: "p".into(),
            config: Arc::new(config),
        };
        let sink = LogSink::new(tag, "stderr");
        // The secret straddles the cut at MAX_LINE, written in two parts.
        let mut line = vec![b'x'; MAX_LINE - 4];
        line.extend_from_slice(b"s3cr");
        sink.push(&line);
        sink.push(b"3t-us6 tail");
        let pending = sink.pending.lock().unwrap().clone();
        assert!(
            pending.starts_with(b"s3cr3t-us6") || pending.starts_with(b"***"),
            "the secret's start was cut off and logged: {:?}",
            String::from_utf8_lossy(&pending[..20.min(pending.len())])
        );
    }
}
