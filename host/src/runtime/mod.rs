//! The WebAssembly runtime: loads modules (components implementing `wit/processor.wit`),
//! checks which world they implement before any row is read, and runs each batch in a fresh,
//! sandboxed instance under the module's limits.
//!
//! Isolation: one store and one instance per batch, from a pre-instantiated component, so no
//! state survives from one batch (or one pipeline) to the next, and a trapped instance is
//! never reused.

mod answer;
mod call;
mod contract;
pub mod engine;
mod host;
mod http;
mod lifecycle;
mod module_config;
mod sched;
mod sniff;
pub mod text;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{InstancePre, Linker};
use wasmtime::Engine;

use crate::model::error::{Error, Result};
pub use call::Outcome;
pub use contract::bindings::{Batch, ConfigKey, Rejection};
use contract::bindings::{Exports, LifecycleIndices};
use host::ModuleState;
pub use http::origin::Origin;
pub use http::HttpOptions;
use http::Outbound;
pub use lifecycle::{check_keys, flagged as flagged_key, start as start_modules};
pub use module_config::ModuleConfig;
use module_config::Tag;
pub use sched::limits::{self, Limits};

use contract::world::world_of;
pub use contract::world::{Contract, Implements, World, PACKAGE, PACKAGE_VERSION};

/// The engine and the linkers, shared by every module of the process.
pub struct Runtime {
    engine: Engine,
    transform_linker: Linker<ModuleState>,
    destination_linker: Linker<ModuleState>,
    cache_dir: Option<PathBuf>,
    fuel: bool,
}

/// What `host check` reports about a module.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub world: World,
    /// The contract version it implements, and whether it exports `lifecycle`.
    pub implements: Implements,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub from_cache: bool,
    pub load_time: Duration,
}

impl Inspection {
    /// `transform world, tidemark:processor@0.2.0` and how it stands on configuration keys.
    pub fn describe(&self) -> String {
        format!(
            "{} world, {PACKAGE}@{}{}",
            self.world.name(),
            self.implements.version,
            match (self.implements.contract, self.implements.lifecycle) {
                (Contract::V0_1, _) => " (contract 0.1: declares no configuration keys)",
                (Contract::V0_2, false) => " (no lifecycle export: declares no configuration keys)",
                (Contract::V0_2, true) => "",
            }
        )
    }
}

impl Runtime {
    pub fn new(options: &engine::EngineOptions) -> Result<Self> {
        let engine = engine::new_engine(options)?;
        let link_error =
            |err: wasmtime::Error| Error::fatal(format!("cannot link host functions: {err}"));
        let mut transform_linker = Linker::new(&engine);
        // All of WASI p2 is linked, granting nothing: guests built by other toolchains import
        // far more than their world (sockets, filesystem, cli) and fail to load otherwise.
        wasmtime_wasi::p2::add_to_linker_async(&mut transform_linker).map_err(link_error)?;
        add_host_interfaces(&mut transform_linker).map_err(link_error)?;
        let mut destination_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut destination_linker).map_err(link_error)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut destination_linker)
            .map_err(link_error)?;
        http::request_text::cap_request_text(&mut destination_linker).map_err(link_error)?;
        add_host_interfaces(&mut destination_linker).map_err(link_error)?;
        Ok(Runtime {
            engine,
            transform_linker,
            destination_linker,
            cache_dir: options.cache_dir.clone(),
            fuel: options.fuel,
        })
    }

    /// Loads a module and checks it against the contract, without running any of its code.
    pub fn inspect(&self, path: &Path, limits: &limits::CompileLimits) -> Result<Inspection> {
        self.prepare(path, limits).map(|(_, inspection)| inspection)
    }

    /// Loads a module as a module of `pipeline` with its configuration and limits; a
    /// destination reaches the network as `http` allows. No code of the module runs yet: its
    /// configuration is checked and its `init` called by [`start_modules`].
    pub fn load(
        &self,
        path: &Path,
        pipeline: &str,
        config: ModuleConfig,
        limits: Limits,
        http: &HttpOptions,
    ) -> Result<Module> {
        if limits.fuel.is_some() && !self.fuel {
            return Err(Error::fatal(
                "a fuel budget needs an engine created with fuel metering",
            ));
        }
        let (pre, inspection) = self.prepare(path, &limits.compile)?;
        let name: Arc<str> = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string())
            .into();
        tracing::info!(
            "{pipeline}: module {name}: {} ({:.1?}{})",
            inspection.describe(),
            inspection.load_time,
            if inspection.from_cache {
                ", from the compile cache"
            } else {
                ", compiled"
            }
        );
        let pipeline: Arc<str> = pipeline.into();
        let outbound = match inspection.world {
            World::Destination => Some(Arc::new(Outbound::new(
                name.clone(),
                pipeline.clone(),
                http,
            )?)),
            World::Transform => None,
        };
        Ok(Module {
            tag: Tag {
                module: name,
                pipeline,
                config: Arc::new(config),
            },
            outbound,
            world: inspection.world,
            pre,
            limits,
            fuel_metered: self.fuel,
            inspection: Arc::new(inspection),
        })
    }

    /// Compiles (or loads from the cache), finds the world from the exports, and links the
    /// imports: every check that can fail before a row is read.
    fn prepare(&self, path: &Path, limits: &limits::CompileLimits) -> Result<(Pre, Inspection)> {
        let compiled = engine::compile(&self.engine, path, self.cache_dir.as_deref(), limits)?;
        let component = compiled.component;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let module = path.display().to_string();
        let implements = world_of(&module, &exports)?;
        let world = implements.world;
        let unlinkable = |err: wasmtime::Error| {
            Error::invalid(format!(
                "module {module} implements the {} world but does not link: {err}",
                world.name()
            ))
            .with_hint(
                if world == World::Transform
                    && imports.iter().any(|name| name.starts_with("wasi:http/"))
                {
                    // Toolchains import wasi:http whether or not the code sends a request
                    // (componentize-js does, unless told not to), so both fixes are named.
                    "a transform is given no wasi:http: if it sends no HTTP requests, build it without them (componentize-js: add -d http -d fetch-event); if it must send some, build it against the destination world"
                } else {
                    "build it against wit/processor.wit with the tidemark guest SDK or wit-bindgen"
                },
            )
        };
        let linker = match world {
            World::Transform => &self.transform_linker,
            World::Destination => &self.destination_linker,
        };
        let instance = linker.instantiate_pre(&component).map_err(unlinkable)?;
        let exports_of = match (world, implements.contract) {
            (World::Transform, Contract::V0_2) => Exports::Transform(
                contract::bindings::transform::exports::tidemark::processor::transformer::GuestIndices::new(
                    &instance,
                )
                .map_err(unlinkable)?,
            ),
            (World::Destination, Contract::V0_2) => Exports::Destination(
                contract::bindings::destination::exports::tidemark::processor::deliverer::GuestIndices::new(
                    &instance,
                )
                .map_err(unlinkable)?,
            ),
            (World::Transform, Contract::V0_1) => Exports::LegacyTransform(
                contract::bindings::legacy::transform::exports::tidemark::processor::transformer::GuestIndices::new(
                    &instance,
                )
                .map_err(unlinkable)?,
            ),
            (World::Destination, Contract::V0_1) => Exports::LegacyDestination(
                contract::bindings::legacy::destination::exports::tidemark::processor::deliverer::GuestIndices::new(
                    &instance,
                )
                .map_err(unlinkable)?,
            ),
        };
        let lifecycle = match implements.lifecycle {
            true => Some(LifecycleIndices::new(&instance).map_err(unlinkable)?),
            false => None,
        };
        Ok((
            Pre {
                instance,
                exports: exports_of,
                lifecycle,
            },
            Inspection {
                world,
                implements,
                imports,
                exports,
                from_cache: compiled.from_cache,
                load_time: compiled.took,
            },
        ))
    }
}

/// Both versions of the `host` interface (and of `types`): a linker serves modules of either.
fn add_host_interfaces(linker: &mut Linker<ModuleState>) -> wasmtime::Result<()> {
    use contract::bindings::{legacy, transform};
    use wasmtime::component::HasSelf;
    transform::tidemark::processor::host::add_to_linker::<_, HasSelf<ModuleState>>(
        linker,
        |state| state,
    )?;
    transform::tidemark::processor::types::add_to_linker::<_, HasSelf<ModuleState>>(
        linker,
        |state| state,
    )?;
    legacy::transform::tidemark::processor::host::add_to_linker::<_, HasSelf<ModuleState>>(
        linker,
        |state| state,
    )?;
    legacy::transform::tidemark::processor::types::add_to_linker::<_, HasSelf<ModuleState>>(
        linker,
        |state| state,
    )
}

/// A module linked and ready to instantiate, with the indices of what it exports.
#[derive(Clone)]
struct Pre {
    instance: InstancePre<ModuleState>,
    exports: Exports,
    /// `None` for a module that does not export `lifecycle` (every 0.1 module).
    lifecycle: Option<LifecycleIndices>,
}

/// A loaded module, bound to one pipeline's configuration and limits. A clone is cheap and
/// shares everything: a call runs on a clone, on the guest runtime (`runtime/executor.rs`).
#[derive(Clone)]
pub struct Module {
    tag: Tag,
    outbound: Option<Arc<Outbound>>,
    world: World,
    pre: Pre,
    limits: Limits,
    fuel_metered: bool,
    /// Shared: kept for `host test` and logs, read rarely, and cheap to clone with the module.
    inspection: Arc<Inspection>,
}

impl Module {
    pub fn name(&self) -> &str {
        &self.tag.module
    }

    /// Text this module wrote (an error, a rejection's reason), as the host may show it: its
    /// secrets masked and its control characters escaped.
    pub fn redact(&self, text: &str) -> String {
        self.tag.config.shown(text)
    }

    /// An error message or reason this module returned, as the host keeps it: redacted, and
    /// cut to 1 KiB (masked before the cut; see `rejections.rs`).
    pub fn bounded(&self, text: &str) -> String {
        crate::model::rejections::bounded_reason(text, |text| self.redact(text))
    }

    pub fn world(&self) -> World {
        self.world
    }

    pub fn inspection(&self) -> &Inspection {
        &self.inspection
    }

    /// The configuration this module was loaded with.
    pub fn config(&self) -> &ModuleConfig {
        &self.tag.config
    }

    /// Whether fuel is counted (else [`crate::model::Usage::fuel`] stays 0).
    pub fn fuel_metered(&self) -> bool {
        self.fuel_metered
    }

    fn engine(&self) -> &Engine {
        self.pre.instance.engine()
    }
}
