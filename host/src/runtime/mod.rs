//! The WebAssembly runtime: loads modules (components implementing `wit/processor.wit`),
//! checks which world they implement before any row is read, and runs each batch in a fresh,
//! sandboxed instance under the module's limits.
//!
//! Isolation: one store and one instance per batch, from a pre-instantiated component, so no
//! state survives from one batch (or one pipeline) to the next, and a trapped instance is
//! never reused.

mod bindings;
pub mod chain;
pub mod engine;
mod executor;
mod fairness;
mod guest_log;
mod host;
mod http;
pub mod limits;
mod module_config;
mod origin;
mod rejections;
mod request_text;
mod resolve;
mod sniff;
pub mod text;
mod transfer;
mod world;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Linker;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use crate::error::{Error, ErrorKind, Result};
use crate::model::Usage;
pub use bindings::{Batch, DeliveryError, Rejection};
use host::ModuleState;
pub use http::HttpOptions;
use http::{HttpPolicy, Outbound};
pub use limits::Limits;
pub use module_config::ModuleConfig;
use module_config::Tag;
pub use origin::Origin;
pub(crate) use rejections::bounded_reason;

use world::world_of;
pub use world::{World, PACKAGE, PACKAGE_VERSION};

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
    pub version: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub from_cache: bool,
    pub load_time: Duration,
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
        request_text::cap_request_text(&mut destination_linker).map_err(link_error)?;
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
    /// destination reaches the network as `http` allows.
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
        tracing::debug!(
            "loaded {name} ({} world {}) in {:?}{}",
            inspection.world.name(),
            inspection.version,
            inspection.load_time,
            if inspection.from_cache {
                " from the cache"
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
        let (world, version) = world_of(&module, &exports)?;
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
        let pre = match world {
            World::Transform => Pre::Transform(
                bindings::transform::TransformPre::new(
                    self.transform_linker
                        .instantiate_pre(&component)
                        .map_err(unlinkable)?,
                )
                .map_err(unlinkable)?,
            ),
            World::Destination => Pre::Destination(
                bindings::destination::DestinationPre::new(
                    self.destination_linker
                        .instantiate_pre(&component)
                        .map_err(unlinkable)?,
                )
                .map_err(unlinkable)?,
            ),
        };
        Ok((
            pre,
            Inspection {
                world,
                version,
                imports,
                exports,
                from_cache: compiled.from_cache,
                load_time: compiled.took,
            },
        ))
    }
}

fn add_host_interfaces(linker: &mut Linker<ModuleState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    bindings::transform::tidemark::processor::host::add_to_linker::<_, HasSelf<ModuleState>>(
        linker,
        |state| state,
    )?;
    bindings::transform::tidemark::processor::types::add_to_linker::<_, HasSelf<ModuleState>>(
        linker,
        |state| state,
    )
}

#[derive(Clone)]
enum Pre {
    Transform(bindings::transform::TransformPre<ModuleState>),
    Destination(bindings::destination::DestinationPre<ModuleState>),
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

/// What a call returned.
#[derive(Debug)]
pub enum Outcome {
    /// A transform's rows, as JSON array text.
    Rows(String),
    /// A destination's result: the rejected rows, or why the batch was not delivered.
    Delivered(std::result::Result<Vec<Rejection>, DeliveryError>),
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
        rejections::bounded_reason(text, |text| self.redact(text))
    }

    pub fn world(&self) -> World {
        self.world
    }

    pub fn inspection(&self) -> &Inspection {
        &self.inspection
    }

    /// Whether fuel is counted (else [`Usage::fuel`] stays 0).
    pub fn fuel_metered(&self) -> bool {
        self.fuel_metered
    }

    /// Runs the module on one batch in a fresh instance, on the guest runtime. What the call
    /// used comes back whether it succeeded or not: a module that spins to its deadline or
    /// runs out of memory on every batch is the one whose cost its pipeline's accounting must
    /// show.
    pub async fn call(&self, batch: Arc<Batch>) -> (Result<Outcome>, Usage) {
        // The deadline counts from here, so a wait for the guest runtime counts too.
        let started = Instant::now();
        let module = self.clone();
        let call = executor::spawn(async move { module.call_here(&batch, started).await });
        // A guest computing on the guest runtime checks in with the scheduler at once rather
        // than at its next tick, and so lets this call start and ask for its turn.
        self.engine().increment_epoch();
        call.await.unwrap_or_else(|lost| {
            let error = Error::fatal(format!(
                "module {} of pipeline {:?}: the host lost the call: {lost}",
                self.tag.module, self.tag.pipeline
            ));
            (Err(error), Usage::default())
        })
    }

    fn engine(&self) -> &Engine {
        match &self.pre {
            Pre::Transform(pre) => pre.engine(),
            Pre::Destination(pre) => pre.engine(),
        }
    }

    /// [`Module::call`] on the runtime this runs on.
    async fn call_here(&self, batch: &Batch, started: Instant) -> (Result<Outcome>, Usage) {
        let state = ModuleState::new(
            self.tag.clone(),
            &self.limits,
            HttpPolicy::new(self.outbound.clone()),
        );
        let mut store = Store::new(self.engine(), state);
        store.limiter(|state| &mut state.limiter);
        // What the module hands over (its answer, a host call's arguments) is copied into host
        // memory up to this bound, and refused past it before it is copied.
        store.set_hostcall_fuel(transfer::bound(self.world, &self.limits, &batch.rows));
        // Instantiation runs guest code too, so the deadline and fuel cover it. The guest
        // yields to the executor at every epoch tick, so a module that computes for long (or
        // forever, until its deadline) takes turns with the other pipelines' guests instead of
        // holding the guest thread.
        let deadline = started + self.limits.deadline;
        // Guest code runs in its pipeline's fair turn of guest CPU (runtime/fairness.rs): the
        // first epoch check (deadline 0) and every tick after check in with the scheduler.
        let turn = fairness::turn(self.tag.pipeline.clone(), deadline, self.engine());
        store.set_epoch_deadline(0);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::YieldCustom(1, Box::pin(turn.clone().tick()))
            })
        });
        let budget = self.limits.fuel.unwrap_or(u64::MAX);
        if self.fuel_metered {
            if let Err(err) = store.set_fuel(budget) {
                let error = Error::fatal(format!("cannot set fuel: {err}"));
                return (Err(error), Usage::default());
            }
        }
        let work = async {
            match &self.pre {
                Pre::Transform(pre) => match pre.instantiate_async(&mut store).await {
                    Ok(instance) => instance
                        .tidemark_processor_transformer()
                        .call_transform(&mut store, batch)
                        .await
                        .map(|rows| rows.map(Outcome::Rows)),
                    Err(err) => Err(err),
                },
                Pre::Destination(pre) => match pre.instantiate_async(&mut store).await {
                    Ok(instance) => instance
                        .tidemark_processor_deliverer()
                        .call_deliver(&mut store, batch)
                        .await
                        .map(|delivered| Ok(Outcome::Delivered(delivered))),
                    Err(err) => Err(err),
                },
            }
        };
        // Epoch ticks interrupt a guest only while it computes. One that waits in a host call
        // (a sleep, a response that never comes, a stream that never ends) is stopped here:
        // at the deadline the call is dropped, and with the store go its requests in flight,
        // their connections and slots, and the batch's permit once this returns.
        let result = tokio::time::timeout_at(deadline.into(), work).await;
        let usage = Usage {
            time: started.elapsed(),
            fuel: match self.fuel_metered {
                true => budget.saturating_sub(store.get_fuel().unwrap_or(0)),
                false => 0,
            },
            peak_memory: store.data().limiter.peak,
        };
        let result = match result {
            Ok(Ok(Ok(outcome))) => Ok(outcome),
            Ok(Ok(Err(message))) => Err(self.failure(
                batch,
                &format!("returned an error: {}", self.bounded(&message)),
                None,
            )),
            Ok(Err(err)) => Err(self.trap_error(batch, &err, store.data().limiter.hit)),
            Err(_elapsed) => Err(self.past_deadline(batch)),
        };
        drop(store);
        (result, usage)
    }

    fn trap_error(&self, batch: &Batch, err: &wasmtime::Error, memory_hit: bool) -> Error {
        let limits = &self.limits;
        if memory_hit {
            return self.failure(
                batch,
                &format!(
                    "exceeded its memory limit of {} MiB (linear memory and tables)",
                    limits.memory >> 20
                ),
                Some("raise --memory-limit if the module needs more"),
            );
        }
        if let Some((what, hint)) = limits::host_limit_hit(err, limits) {
            return self.failure(batch, &what, Some(hint));
        }
        if transfer::exceeded(err) {
            let bound = transfer::bound(self.world, limits, &batch.rows);
            let (what, hint) = transfer::exceeded_message(self.world, limits, bound);
            return self.failure(batch, &what, Some(hint));
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => self.past_deadline(batch),
            Some(Trap::OutOfFuel) => self.failure(
                batch,
                &format!(
                    "ran out of fuel ({} units per batch)",
                    limits.fuel.unwrap_or(0)
                ),
                Some("raise --fuel if the module needs more"),
            ),
            Some(Trap::UnreachableCodeReached) => self.failure(
                batch,
                "panicked or aborted (its message, if any, is in the log above)",
                None,
            ),
            Some(trap) => self.failure(batch, &format!("trapped: {trap}"), None),
            None => self.failure(
                batch,
                &format!("failed: {}", self.redact(&format!("{err:#}"))),
                None,
            ),
        }
    }

    /// One error for both ways a call is stopped at its deadline: interrupted while
    /// computing, or dropped while waiting.
    fn past_deadline(&self, batch: &Batch) -> Error {
        self.failure(
            batch,
            &format!(
                "exceeded its deadline of {:?} per call (--deadline)",
                self.limits.deadline
            ),
            Some("raise --deadline if the module needs more time"),
        )
    }

    fn failure(&self, batch: &Batch, what: &str, hint: Option<&str>) -> Error {
        let error = Error::new(
            ErrorKind::Module,
            format!(
                "module {} {what} on batch {} of pipeline {:?}",
                self.tag.module, batch.id, batch.pipeline
            ),
        );
        match hint {
            Some(hint) => error.with_hint(hint),
            None => error,
        }
    }
}
