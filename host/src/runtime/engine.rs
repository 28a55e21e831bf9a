//! The one wasmtime engine of the process, and the on-disk cache of compiled components.
//!
//! Compiling a JavaScript or Python component takes seconds; loading its serialized form takes
//! milliseconds. The cache key covers the module's bytes and everything about the engine that
//! changes compiled code (wasmtime's version and settings, fuel and epochs included), so a
//! cached file is only ever loaded into an engine that could have written it.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limits::EPOCH_TICK;
use crate::error::{Error, Result};

/// Engine settings chosen at start-up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Meter fuel: costs some speed for every module, so only on when a budget is set.
    pub fuel: bool,
    /// The largest memory cap of any module: the size of a pooled memory slot.
    pub max_memory: u64,
    /// Where compiled components are kept; `None` turns the cache off.
    pub cache_dir: Option<PathBuf>,
}

pub fn new_engine(options: &EngineOptions) -> Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(options.fuel);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(256)
        .total_core_instances(2048)
        .total_memories(512)
        .total_tables(1024)
        .total_stacks(256)
        .max_memory_size(options.max_memory as usize)
        .max_memories_per_component(16)
        .max_tables_per_component(64)
        .max_core_instances_per_component(64)
        .table_elements(50_000)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = match Engine::new(&config) {
        Ok(engine) => engine,
        Err(err) => {
            // The pool reserves address space up front; where that is not allowed, allocate on demand.
            tracing::warn!("pooling allocator unavailable ({err}); allocating instances on demand");
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            Engine::new(&config).map_err(|err| {
                Error::fatal(format!("cannot create the WebAssembly engine: {err}"))
            })?
        }
    };
    let ticker = engine.weak();
    std::thread::Builder::new()
        .name("tidemark-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match ticker.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        })
        .map_err(|err| Error::io("cannot start the epoch ticker", err))?;
    Ok(engine)
}

/// The default cache directory: `$TIDEMARK_CACHE_DIR`, else `$XDG_CACHE_HOME/tidemark`, else
/// `~/.cache/tidemark`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TIDEMARK_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("tidemark"))
}

/// A component ready to link, and how it was obtained.
pub struct Compiled {
    pub component: Component,
    pub from_cache: bool,
    pub took: Duration,
}

/// Compiles `path`, or loads it from the cache.
pub fn compile(engine: &Engine, path: &Path, cache_dir: Option<&Path>) -> Result<Compiled> {
    let started = std::time::Instant::now();
    // A module seen before (same path, size and modification time) is loaded without being
    // read or hashed: for a 20 MB Python component that is most of a cached load.
    let stamp = cache_dir.and_then(|dir| Stamp::of(engine, dir, path));
    if let Some(cached) = stamp.as_ref().and_then(Stamp::remembered) {
        // SAFETY: as below; the key was computed from this module's bytes.
        if let Ok(component) = unsafe { Component::deserialize_file(engine, &cached) } {
            return Ok(Compiled {
                component,
                from_cache: true,
                took: started.elapsed(),
            });
        }
    }
    let wasm = std::fs::read(path).map_err(|err| {
        Error::io(format!("cannot read module {}", path.display()), err)
            .with_hint("pass --module with the path of a .wasm component")
    })?;
    let key = cache_key(engine, &wasm);
    if let Some(stamp) = &stamp {
        stamp.remember(&key);
    }
    let cached = cache_dir.map(|dir| dir.join(format!("{key}.cwasm")));
    if let Some(cached) = cached.as_deref().filter(|file| file.exists()) {
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash (it is in the file name); wasmtime re-checks the header.
        match unsafe { Component::deserialize_file(engine, cached) } {
            Ok(component) => {
                return Ok(Compiled {
                    component,
                    from_cache: true,
                    took: started.elapsed(),
                })
            }
            Err(err) => tracing::warn!("ignoring cached {}: {err}", cached.display()),
        }
    }
    let component = Component::new(engine, &wasm).map_err(|err| {
        // The pooling allocator's memory slots are as large as the memory limit; a module that
        // starts with more memory than that is refused at compile time.
        if format!("{err:#}").contains("memory does not fit") {
            return Error::invalid(format!(
                "module {} starts with more linear memory than the memory limit allows ({err})",
                path.display()
            ))
            .with_hint("raise --memory-limit (memory_limit in a pipelines file); JavaScript and Python components need 32MiB or more");
        }
        let plain_module = wasm.get(4..8) == Some(&[1, 0, 0, 0]);
        let error = Error::invalid(format!(
            "{} is not a WebAssembly component: {err}",
            path.display()
        ));
        if plain_module {
            error.with_hint("it is a core module; build processors for the wasm32-wasip2 target, which produces components")
        } else {
            error.with_hint("pass --module with a component built against wit/processor.wit")
        }
    })?;
    if let Some(cached) = cached {
        if let Err(err) = store_compiled(&component, &cached) {
            tracing::warn!(
                "cannot cache the compiled module in {}: {err}",
                cached.display()
            );
        }
    }
    Ok(Compiled {
        component,
        from_cache: false,
        took: started.elapsed(),
    })
}

fn store_compiled(component: &Component, path: &Path) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|err| std::io::Error::other(err.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write aside, then rename: a reader never sees half a file.
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}

/// Where the cache key of one module file is remembered: a small file in `<cache>/stamps`,
/// named after the module's path, size, modification time and the engine's settings.
struct Stamp {
    dir: PathBuf,
    file: PathBuf,
}

impl Stamp {
    fn of(engine: &Engine, cache_dir: &Path, path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let modified = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        let canonical = std::fs::canonicalize(path).ok()?;
        let mut hasher = Sha256Hasher(Sha256::new());
        hasher.write(canonical.as_os_str().as_encoded_bytes());
        meta.len().hash(&mut hasher);
        modified.as_nanos().hash(&mut hasher);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let name = hex::encode(&hasher.0.finalize()[..20]);
        Some(Stamp {
            dir: cache_dir.to_owned(),
            file: cache_dir.join("stamps").join(name),
        })
    }

    /// The compiled module, if this stamp was seen with a key whose file still exists.
    fn remembered(&self) -> Option<PathBuf> {
        let key = std::fs::read_to_string(&self.file).ok()?;
        let key = key.trim();
        let valid = key.len() == 40 && key.bytes().all(|b| b.is_ascii_hexdigit());
        let cached = self.dir.join(format!("{key}.cwasm"));
        (valid && cached.exists()).then_some(cached)
    }

    fn remember(&self, key: &str) {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let partial = self
                .file
                .with_extension(format!("partial-{}", std::process::id()));
            std::fs::write(&partial, key)?;
            std::fs::rename(&partial, &self.file)
        };
        if let Err(err) = write() {
            tracing::debug!(
                "cannot remember the cache key in {}: {err}",
                self.file.display()
            );
        }
    }
}

struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.write(wasm);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..20])
}
