//! Per-module limits: a memory cap, a wall-clock deadline per call (epoch interruption) and an
//! optional fuel budget per batch. The defaults fit JavaScript and Python components, whose
//! runtimes start with tens of MiB of linear memory.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// How often the engine's epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

pub const DEFAULT_MEMORY: u64 = 256 << 20;
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Bytes of linear memory (all memories of one instance together).
    pub memory: u64,
    /// Wall-clock time one call may take.
    pub deadline: Duration,
    /// Fuel (roughly, wasm instructions) one batch may burn; `None`: unmetered.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: DEFAULT_MEMORY,
            deadline: DEFAULT_DEADLINE,
            fuel: None,
        }
    }
}

/// Caps memory growth, remembers the peak, and records that the cap was hit, so that the
/// error a guest sees as a failed allocation can be reported as the limit it is.
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
        let grown = self.current + (desired - current) as u64;
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
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
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
}
