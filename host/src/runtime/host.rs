//! What a module's store holds: WASI with no ambient authority, outbound HTTP behind the
//! pipeline's policy, the memory limiter, the cap on host resources, and the
//! `tidemark:processor/host` interface of each contract version (logging, through [`super::text::log`], and
//! configuration).

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::contract::bindings::{legacy, HostApi, Level};
use super::http::refused::Refused;
use super::http::HttpPolicy;
use super::module_config::Tag;
use super::sched::limits::{host_resources, Limits, MemoryLimiter, FIELDS_BYTES};
use super::text::log::CallLog;

pub struct ModuleState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    policy: HttpPolicy,
    pub limiter: MemoryLimiter,
    tag: Tag,
    log: CallLog,
}

impl ModuleState {
    pub fn new(tag: Tag, limits: &Limits, policy: HttpPolicy) -> Self {
        let log = CallLog::new(tag.clone(), limits);
        // No preopened directories, no environment, no arguments, no sockets: the guest sees
        // only what the host interface and (for destinations) the HTTP policy give it.
        let wasi = WasiCtx::builder()
            .stdout(log.stdout.clone())
            .stderr(log.stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        // What the guest makes the host hold lives in this table (header sets, requests,
        // bodies, streams, pollables): capped in number here, and each header set in size
        // below, so that a guest cannot hold many GiB of host memory with a small memory of
        // its own.
        let mut table = ResourceTable::new();
        table.set_max_capacity(host_resources(limits.memory));
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(FIELDS_BYTES);
        ModuleState {
            table,
            wasi,
            http,
            policy,
            limiter: MemoryLimiter::new(limits.memory),
            tag,
            log,
        }
    }

    /// The first request of this call the host refused by policy, if any.
    pub fn refused_request(&self) -> Option<Refused> {
        self.policy.refused()
    }
}

/// The end of a call: a last line without a newline is logged, and what the log budget
/// dropped is said once.
impl Drop for ModuleState {
    fn drop(&mut self) {
        self.log.finish();
    }
}

impl WasiView for ModuleState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ModuleState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.policy,
        }
    }
}

impl HostApi for ModuleState {
    async fn log(&mut self, level: Level, message: String) {
        self.log.write(level, &message);
    }

    async fn config(&mut self, key: String) -> Option<String> {
        self.tag.config.get(&key)
    }
}

impl super::contract::bindings::transform::tidemark::processor::types::Host for ModuleState {}

/// Contract 0.1's `host` interface: the same two functions.
impl legacy::HostApi for ModuleState {
    async fn log(&mut self, level: legacy::Level, message: String) {
        self.log.write(level.into(), &message);
    }

    async fn config(&mut self, key: String) -> Option<String> {
        self.tag.config.get(&key)
    }
}

impl super::contract::bindings::legacy::transform::tidemark::processor::types::Host
    for ModuleState
{
}
