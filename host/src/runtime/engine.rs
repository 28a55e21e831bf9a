//! The one wasmtime engine of the process, and the on-disk cache of compiled components.
//!
//! Compiling a JavaScript or Python component takes seconds; loading its serialized form takes
//! milliseconds. The cache key covers the module's bytes and everything about the engine that
//! changes compiled code (wasmtime's version and settings, fuel and epochs included), so a
//! cached file is only ever loaded into an engine that could have written it.
//!
//! A cached file is mapped and run as native code, so the cache is trusted only as far as
//! nobody else can write to it: the directory is created for its owner alone (0700), one that
//! another user owns or may write to is refused, files are only loaded when this user owns
//! them, and temporary files are created fresh (never through a link someone planted). The key
//! is a hash of the module's content, read on every load: a module replaced in place, even
//! with its size and modification time kept, is compiled anew.
//!
//! Compiling an untrusted module is bounded ([`CompileLimits`]): modules above
//! `--max-module-size` are refused before they are read, and a compile runs on a thread of its
//! own that the caller waits for at most `--compile-timeout`, off the async workers.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::sched::limits::{CompileLimits, EPOCH_TICK};
use crate::model::error::{Error, Result};

/// What a pooled linear memory keeps resident between instances: what a Rust transform
/// touches for a batch of 1,000 rows; a larger guest's excess goes back by `madvise`.
const MEMORY_KEPT_RESIDENT: usize = 1 << 20;

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
    if let Some(dir) = &options.cache_dir {
        prepare_cache_dir(dir)?;
    }
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
        .max_component_instance_size(4 << 20)
        // Every batch runs in a fresh instance, in a pooled memory slot that is reset to the
        // module's initial image after the call. Reset by `madvise` (the default), the next
        // batch page-faults in and zeroes every page it touches again: 18% of the guest
        // thread's time through `mask_pii` (issue 13). Kept resident, the pages it dirtied
        // (PAGEMAP_SCAN finds them, Linux 6.7+; else the lowest MiB) are reset with `memset`
        // instead: the same contents for the next instance, without the faults.
        .linear_memory_keep_resident(MEMORY_KEPT_RESIDENT)
        .pagemap_scan(Enabled::Auto);
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

/// Creates the cache directory for its owner alone, and refuses one that someone else could
/// have filled: any `.cwasm` in it would run as native code in this process. A directory that
/// cannot be created only turns the cache off, as it did before.
pub fn prepare_cache_dir(dir: &Path) -> Result<()> {
    if let Err(err) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        tracing::warn!(
            "cannot create the compile cache {}: {err}; modules are compiled on every start",
            dir.display()
        );
        return Ok(());
    }
    let meta = std::fs::metadata(dir).map_err(|err| {
        Error::io(
            format!("cannot read the compile cache {}", dir.display()),
            err,
        )
    })?;
    check_cache_dir(dir, &meta, effective_uid())
}

fn check_cache_dir(dir: &Path, meta: &std::fs::Metadata, uid: u32) -> Result<()> {
    let fix = |what: &str| {
        format!(
            "{what}; run `chown {uid} {dir} && chmod 700 {dir}`, or pass --cache-dir with a directory of your own",
            dir = dir.display()
        )
    };
    if !meta.is_dir() {
        return Err(Error::invalid(format!(
            "the compile cache {} is not a directory",
            dir.display()
        ))
        .with_hint("pass --cache-dir with a directory of your own"));
    }
    if meta.uid() != uid {
        return Err(Error::invalid(format!(
            "the compile cache {} belongs to user {}, not to this user ({uid}): compiled modules in it run as native code",
            dir.display(),
            meta.uid()
        ))
        .with_hint(fix("use a directory this user owns")));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Error::invalid(format!(
            "the compile cache {} may be written by other users (mode {:o}): compiled modules in it run as native code",
            dir.display(),
            meta.permissions().mode() & 0o777
        ))
        .with_hint(fix("make it writable by its owner only")));
    }
    Ok(())
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A component ready to link, and how it was obtained.
pub struct Compiled {
    pub component: Component,
    pub from_cache: bool,
    pub took: Duration,
}

/// Compiles `path`, or loads it from the cache. Called from async code, it steps off the
/// async worker first (the rest of the runtime's tasks move to another worker meanwhile).
pub fn compile(
    engine: &Engine,
    path: &Path,
    cache_dir: Option<&Path>,
    limits: &CompileLimits,
) -> Result<Compiled> {
    let blocking = || compile_here(engine, path, cache_dir, limits);
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(blocking)
        }
        _ => blocking(),
    }
}

fn compile_here(
    engine: &Engine,
    path: &Path,
    cache_dir: Option<&Path>,
    limits: &CompileLimits,
) -> Result<Compiled> {
    let started = Instant::now();
    let wasm = read_module(path, limits.max_module_size)?;
    // The key proves the content: a module replaced in place is a new key, whatever its
    // metadata says. Hashing is a few milliseconds for a 20 MB component.
    let key = cache_key(engine, &wasm);
    let cached = cache_dir.map(|dir| dir.join(format!("{key}.cwasm")));
    if let Some(cached) = cached.as_deref().filter(|file| is_ours(file)) {
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash (it is in the file name), into a directory only this user may
        // write to, and this user owns it; wasmtime re-checks the header.
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
    let component = compile_bounded(engine, wasm, path, limits.timeout)?;
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

/// Reads a module, refusing one above `max` bytes (`--max-module-size`) before reading it
/// (and one that grows past it while being read).
fn read_module(path: &Path, max: u64) -> Result<Vec<u8>> {
    let unreadable = |err| {
        Error::io(format!("cannot read module {}", path.display()), err)
            .with_hint("pass --module with the path of a .wasm component")
    };
    let too_large = |size: u64| {
        Error::invalid(format!(
            "module {} is {} bytes, more than the {} a module may be (--max-module-size)",
            path.display(),
            size,
            show_size(max)
        ))
        .with_hint("raise --max-module-size (max_module_size in a pipelines file), or strip the component's debug information with wasm-tools strip")
    };
    let file = std::fs::File::open(path).map_err(|err| match err.kind() {
        // A path the user mistyped is input to fix (exit 2), not a failure of the host.
        std::io::ErrorKind::NotFound => Error::invalid(format!(
            "module {} does not exist",
            path.display()
        ))
        .with_hint("pass --module with the path of a built .wasm component (cargo builds them into target/wasm32-wasip2/release/)"),
        _ => unreadable(err),
    })?;
    let size = file.metadata().map_err(unreadable)?.len();
    if size > max {
        return Err(too_large(size));
    }
    let mut wasm = Vec::with_capacity(size as usize);
    file.take(max.saturating_add(1))
        .read_to_end(&mut wasm)
        .map_err(unreadable)?;
    if wasm.len() as u64 > max {
        return Err(too_large(wasm.len() as u64));
    }
    Ok(wasm)
}

/// Compiles on a thread of its own, waiting at most `timeout` (`--compile-timeout`). Cranelift
/// cannot be interrupted: a compile that times out goes on in the background until it ends,
/// and its result is dropped. The size cap bounds how long that can be.
fn compile_bounded(
    engine: &Engine,
    wasm: Vec<u8>,
    path: &Path,
    timeout: Duration,
) -> Result<Component> {
    if let Some(refused) = super::sniff::not_a_component(&wasm, path) {
        return Err(refused);
    }
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    let compiling = engine.clone();
    std::thread::Builder::new()
        .name("tidemark-compile".into())
        .spawn(move || {
            // The receiver is gone only after a timeout; nobody is left to tell.
            let _ = sender.send(Component::new(&compiling, &wasm));
        })
        .map_err(|err| Error::io("cannot start a compile thread", err))?;
    let compiled = match receiver.recv_timeout(timeout) {
        Ok(compiled) => compiled,
        Err(_) => {
            return Err(Error::invalid(format!(
                "module {} did not compile within {} (--compile-timeout)",
                path.display(),
                humantime::format_duration(timeout)
            ))
            .with_hint("raise --compile-timeout (compile_timeout in a pipelines file), or pass a smaller component; the compile goes on in the background until it ends"))
        }
    };
    compiled.map_err(|err| {
        // The pooling allocator's memory slots are as large as the memory limit; a module that
        // starts with more memory than that is refused at compile time.
        if format!("{err:#}").contains("memory does not fit") {
            return Error::invalid(format!(
                "module {} starts with more linear memory than the memory limit allows ({err})",
                path.display()
            ))
            .with_hint("raise --memory-limit (memory_limit in a pipelines file); JavaScript and Python components need 32MiB or more");
        }
        Error::invalid(format!(
            "{} is not a WebAssembly component: {err}",
            path.display()
        ))
        .with_hint("pass --module with a component built against wit/processor.wit")
    })
}

/// Whether a cached file may be loaded: a regular file (not a link to elsewhere) that this
/// user owns and nobody else may write.
fn is_ours(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() && meta.uid() == effective_uid() && meta.mode() & 0o022 == 0 => {
            true
        }
        Ok(_) => {
            tracing::warn!(
                "ignoring cached {}: not a file of this user's alone",
                path.display()
            );
            false
        }
        Err(_) => false,
    }
}

fn store_compiled(component: &Component, path: &Path) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|err| std::io::Error::other(err.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    // Write aside under a name nobody can guess, created new (`O_EXCL` never follows a link
    // planted at the name), then rename: a reader never sees half a file, and the rename
    // replaces a link at the final name rather than writing through it.
    let partial = dir.join(format!(
        ".{}.{:016x}.partial",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        fastrand::u64(..)
    ));
    let written = write_new(&partial, &bytes).and_then(|()| std::fs::rename(&partial, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// `64 MiB`, `1500 KiB` or `100 bytes`: a size as the flags take it, exactly.
fn show_size(bytes: u64) -> String {
    match bytes {
        _ if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) => format!("{} MiB", bytes >> 20),
        _ if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) => format!("{} KiB", bytes >> 10),
        _ => format!("{bytes} bytes"),
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

#[cfg(test)]
mod tests {
    //! Tests of the engine and its compile cache.

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tidemark-engine-{name}-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_cache_is_created_for_its_owner_alone() {
        let dir = scratch("create").join("a").join("cache");
        prepare_cache_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_cache_others_may_write_or_own_is_refused() {
        let dir = scratch("shared");
        for mode in [0o777, 0o775, 0o1777] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = prepare_cache_dir(&dir).unwrap_err();
            assert_eq!(err.kind(), crate::model::error::ErrorKind::Invalid);
            let text = format!("{err:#}");
            assert!(text.contains("may be written by other users"), "{text}");
            assert!(text.contains(&dir.display().to_string()), "{text}");
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_cache_dir(&dir).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        let err = check_cache_dir(&dir, &meta, meta.uid() + 1).unwrap_err();
        assert!(format!("{err:#}").contains("belongs to user"), "{err:#}");
    }

    #[test]
    fn temporary_files_never_follow_a_planted_link() {
        let dir = scratch("link");
        let target = dir.join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        let planted = dir.join("planted.partial");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        assert!(write_new(&planted, b"compiled code").is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn only_this_users_own_files_are_loaded() {
        let dir = scratch("ours");
        let file = dir.join("k.cwasm");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(is_ours(&file));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(!is_ours(&file));
        let link = dir.join("l.cwasm");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(!is_ours(&link));
    }

    #[test]
    fn the_key_follows_the_content_and_large_modules_are_refused() {
        let engine = Engine::default();
        assert_ne!(
            cache_key(&engine, b"\0asm a"),
            cache_key(&engine, b"\0asm b")
        );
        let dir = scratch("large");
        let module = dir.join("big.wasm");
        let file = std::fs::File::create(&module).unwrap();
        let max = CompileLimits::default().max_module_size;
        file.set_len(max + 1).unwrap();
        let err = read_module(&module, max).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("64 MiB a module may be (--max-module-size)"),
            "{text}"
        );
        assert!(read_module(&module, max + 1).is_ok());
    }

    /// How long reading and hashing a component of the Python guest's size takes: the price
    /// of a key that proves the content. `cargo test --release -- --ignored hashing`.
    #[test]
    #[ignore]
    fn hashing_a_python_sized_component() {
        let dir = scratch("hash");
        let module = dir.join("big.wasm");
        let bytes: Vec<u8> = (0..18 << 20).map(|_| fastrand::u8(..)).collect();
        std::fs::write(&module, &bytes).unwrap();
        let engine = Engine::default();
        for _ in 0..3 {
            let started = Instant::now();
            let wasm = read_module(&module, 64 << 20).unwrap();
            let read = started.elapsed();
            let key = cache_key(&engine, &wasm);
            eprintln!(
                "read 18 MiB in {read:?}, hashed in {:?} ({key})",
                started.elapsed() - read
            );
        }
    }
}
