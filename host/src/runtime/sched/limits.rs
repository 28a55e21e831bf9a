//! Per-module limits: a memory cap, a wall-clock deadline per call (epoch interruption), an
//! optional fuel budget per batch, and a log budget per call. The defaults fit JavaScript and
//! Python components, whose runtimes start with tens of MiB of linear memory.
//!
//! The memory cap covers what a module makes the host hold, not only its linear memory: its
//! tables are charged to the same budget, its instances, tables and memories are counted, and
//! the host-side resources it holds (HTTP header sets, request bodies, streams, pollables) are
//! capped in number and size by [`host_resources`], derived from the same `--memory-limit`.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// How often the engine's epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

pub const DEFAULT_MEMORY: u64 = 256 << 20;
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
pub const DEFAULT_LOG_LINES: u64 = 1000;
pub const DEFAULT_LOG_BYTES: u64 = 64 << 10;

/// What one element of a table costs the host (a function reference and its metadata), charged
/// to the memory budget as the table grows.
pub const TABLE_ELEMENT_BYTES: u64 = 16;
/// Core instances, tables and memories one component instance may have. Rust components have
/// a handful; JavaScript and Python ones a few dozen at most.
pub const MAX_INSTANCES: usize = 256;
pub const MAX_TABLES: usize = 256;
pub const MAX_MEMORIES: usize = 64;

/// The most one HTTP header set (`wasi:http` `fields`) may hold, in the host's accounting of
/// names and values (wasmtime's default is 128 KiB): four times what common servers accept
/// in a whole request head.
pub const FIELDS_BYTES: usize = 32 << 10;
/// The largest write to an outgoing request body the host buffers (wasmtime's default is
/// 1 MiB); a body buffers two, so an unsent request holds at most 64 KiB.
pub const BODY_CHUNK_BYTES: usize = 32 << 10;
/// One host resource (handle) per this much of `--memory-limit`; each holds at most
/// [`FIELDS_BYTES`] or so, so the handles of one instance hold at most an eighth of the limit.
pub const MEMORY_PER_RESOURCE: u64 = 256 << 10;
/// Handles every module may hold, whatever its memory limit: a destination with requests in
/// flight needs a few per request.
pub const MIN_RESOURCES: usize = 64;

/// How many host resources (entries of the store's resource table) a module with a memory
/// limit of `memory` bytes may hold at once: 1,024 at the default 256 MiB.
pub fn host_resources(memory: u64) -> usize {
    usize::try_from(memory / MEMORY_PER_RESOURCE)
        .unwrap_or(usize::MAX)
        .max(MIN_RESOURCES)
}

/// The largest module file loaded by default: compile time and memory grow with a module's
/// size, and a component this large is far beyond any module built today (Python's is about
/// 20 MB).
pub const DEFAULT_MAX_MODULE_SIZE: u64 = 64 << 20;
/// How long a compile may take by default before the module is refused. The Python component
/// takes about 11 s on two busy cores; Cranelift's time grows about linearly with code size.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(300);

/// What compiling one untrusted module may cost (`--max-module-size`, `--compile-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CompileLimits {
    /// Bytes of the module file; a larger one is refused before it is read.
    pub max_module_size: u64,
    /// Time the compile may take; a cached module loads without compiling.
    pub timeout: Duration,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_module_size: DEFAULT_MAX_MODULE_SIZE,
            timeout: DEFAULT_COMPILE_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Bytes of linear memory (all memories of one instance together).
    pub memory: u64,
    /// Wall-clock time one call may take.
    pub deadline: Duration,
    /// Fuel (roughly, wasm instructions) one batch may burn; `None`: unmetered.
    pub fuel: Option<u64>,
    /// Log lines (the host interface's `log`, stdout and stderr together) one call may write;
    /// past this or `log_bytes` lines are dropped and counted.
    pub log_lines: u64,
    /// Bytes of log text one call may write.
    pub log_bytes: u64,
    /// What loading the module may cost.
    pub compile: CompileLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: DEFAULT_MEMORY,
            deadline: DEFAULT_DEADLINE,
            fuel: None,
            log_lines: DEFAULT_LOG_LINES,
            log_bytes: DEFAULT_LOG_BYTES,
            compile: CompileLimits::default(),
        }
    }
}

/// Caps memory and table growth together, remembers the peak, and records that the cap was
/// hit, so that the error a guest sees as a failed allocation can be reported as the limit it
/// is.
#[derive(Debug)]
pub struct MemoryLimiter {
    cap: u64,
    current: u64,
    pub peak: u64,
    pub hit: bool,
}

impl MemoryLimiter {
    pub fn new(cap: u64) -> Self {
        MemoryLimiter {
            cap,
            current: 0,
            peak: 0,
            hit: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grown = self
            .current
            .saturating_add(desired.saturating_sub(current) as u64);
        if grown > self.cap {
            self.hit = true;
            return Ok(false);
        }
        self.current = grown;
        self.peak = self.peak.max(grown);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let bytes = (desired.saturating_sub(current) as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        let grown = self.current.saturating_add(bytes);
        if grown > self.cap {
            self.hit = true;
            return Ok(false);
        }
        self.current = grown;
        self.peak = self.peak.max(grown);
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// What a failed call hit, if it was one of the caps on host resources: what to say after
/// "module M …", and the hint.
pub fn host_limit_hit(err: &wasmtime::Error, limits: &Limits) -> Option<(String, &'static str)> {
    use wasmtime::component::ResourceTableError;
    use wasmtime_wasi_http::FieldMapError;
    if let Some(ResourceTableError::Full) = err.downcast_ref::<ResourceTableError>() {
        return Some((
            format!(
                "exceeded its limit of {} host resources (HTTP header sets, requests, streams, \
                 pollables held at once), one per 256 KiB of its --memory-limit of {} MiB",
                host_resources(limits.memory),
                limits.memory >> 20
            ),
            "drop resources the module no longer needs, or raise --memory-limit",
        ));
    }
    match err.downcast_ref::<FieldMapError>() {
        Some(FieldMapError::TotalSizeTooBig | FieldMapError::TooManyFields) => Some((
            format!(
                "exceeded the limit of {} KiB per HTTP header set (names and values as the host \
                 counts them)",
                FIELDS_BYTES >> 10
            ),
            "send fewer or smaller headers: the limit is fixed",
        )),
        _ => None,
    }
}

/// Parses `256MiB`, `64 MB`, `1GiB` or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?}; write e.g. 256MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}; use KiB, MiB or GiB")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn the_limiter_refuses_growth_past_the_cap_and_says_so() {
        let mut limiter = MemoryLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(!limiter.memory_growing(60, 120, None).unwrap());
        assert!(limiter.hit);
        assert_eq!(limiter.peak, 60);
    }

    #[test]
    fn tables_are_charged_to_the_memory_budget() {
        let mut limiter = MemoryLimiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 512 << 10, None).unwrap());
        // 16 bytes an element: 32,768 elements take the other half.
        assert!(limiter.table_growing(0, 32 << 10, None).unwrap());
        assert_eq!(limiter.peak, 1 << 20);
        assert!(!limiter
            .table_growing(32 << 10, (32 << 10) + 1, None)
            .unwrap());
        assert!(limiter.hit);
        // A million elements no longer fit a small module, whatever wasmtime would allow.
        let mut small = MemoryLimiter::new(1 << 20);
        assert!(!small.table_growing(0, 1_000_000, None).unwrap());
    }

    #[test]
    fn hitting_a_host_cap_is_named() {
        let limits = Limits::default();
        let full = wasmtime::Error::new(wasmtime::component::ResourceTableError::Full);
        let (what, hint) = host_limit_hit(&full, &limits).unwrap();
        assert!(what.contains("limit of 1024 host resources"), "{what}");
        assert!(what.contains("--memory-limit of 256 MiB"), "{what}");
        assert!(hint.contains("--memory-limit"));
        let big = wasmtime::Error::new(wasmtime_wasi_http::FieldMapError::TotalSizeTooBig);
        assert!(host_limit_hit(&big, &limits).unwrap().0.contains("32 KiB"));
        assert!(host_limit_hit(&wasmtime::Error::msg("other"), &limits).is_none());
    }

    #[test]
    fn host_resources_follow_the_memory_limit() {
        assert_eq!(host_resources(DEFAULT_MEMORY), 1024);
        assert_eq!(host_resources(1 << 20), MIN_RESOURCES);
        // The worst case they hold stays an eighth of the limit (or the floor's 2 MiB).
        assert!(host_resources(DEFAULT_MEMORY) as u64 * FIELDS_BYTES as u64 <= DEFAULT_MEMORY / 8);
    }
}
