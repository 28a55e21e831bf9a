//! One call of a module, in a fresh instance under its limits: a batch (transform or
//! deliver), or one of the `lifecycle` functions at start. This file runs it: the store with
//! its memory limit, transfer bound, fuel, deadline and fair turn of guest CPU, the
//! instantiation, and the export the module's contract version calls for. What the call came
//! to (an answer, a trap, a limit, the deadline, the module's own retry-later or fatal) is
//! judged in `answer.rs` ([`Module::judge`]).

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::Instance;
use wasmtime::{Store, UpdateDeadline};

use super::contract::bindings::{
    legacy, ConfigKey, Exports, ProcessorError, Rejection, Transformed,
};
use super::host::ModuleState;
use super::http::HttpPolicy;
use super::module_config::{ModuleConfig, Tag};
use super::sched::{executor, fairness};
use super::text::transfer;
use super::{Batch, Module, World};
use crate::model::error::{Error, Result};
use crate::model::Usage;

/// What a batch call returned.
#[derive(Debug)]
pub enum Outcome {
    /// A transform's rows (JSON array text) and the input rows it rejected. A 0.1 transform
    /// rejects none.
    Transformed(Transformed),
    /// A destination's rejected rows (none: all delivered).
    Delivered(Vec<Rejection>),
}

/// What a call asks of the module.
#[derive(Clone, Copy)]
pub(super) enum Request<'a> {
    Batch(&'a Batch),
    ConfigKeys,
    Init,
}

/// What a module answered, before the host judges it.
pub(super) enum Answer {
    Batch(Outcome),
    Keys(Option<Vec<ConfigKey>>),
    Initialized,
}

/// A module's own word against the call.
pub(super) enum Refusal {
    /// Contract 0.2 (and a 0.1 destination): retry later, or fatal.
    Processor(ProcessorError),
    /// A 0.1 transform's error string, or `init`'s: a failure of the call.
    Message(String),
}

pub(super) type Answered = std::result::Result<Answer, Refusal>;

impl Module {
    /// Runs the module on one batch in a fresh instance, on the guest runtime. What the call
    /// used comes back whether it succeeded or not: a module that spins to its deadline or
    /// runs out of memory on every batch is the one whose cost its pipeline's accounting must
    /// show.
    pub async fn call(&self, batch: Arc<Batch>) -> (Result<Outcome>, Usage) {
        let (answer, usage) = self
            .call_on_guest_runtime(move |module, started| async move {
                module.call_here(Request::Batch(&batch), started).await
            })
            .await;
        let outcome = answer.and_then(|answer| match answer {
            Answer::Batch(outcome) => Ok(outcome),
            Answer::Keys(_) | Answer::Initialized => Err(Error::fatal(format!(
                "module {}: the host mixed up a call",
                self.tag.module
            ))),
        });
        (outcome, usage)
    }

    /// Calls a `lifecycle` function (a module without the export answers as the default:
    /// no keys declared, nothing to check).
    pub(super) async fn call_lifecycle(&self, request: Request<'static>) -> Result<Answer> {
        self.call_on_guest_runtime(move |module, started| async move {
            module.call_here(request, started).await
        })
        .await
        .0
    }

    async fn call_on_guest_runtime<F, Fut>(&self, work: F) -> (Result<Answer>, Usage)
    where
        F: FnOnce(Module, Instant) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = (Result<Answer>, Usage)> + Send + 'static,
    {
        // The deadline counts from here, so a wait for the guest runtime counts too.
        let started = Instant::now();
        let call = executor::spawn(work(self.clone(), started));
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

    /// [`Module::call`] on the runtime this runs on.
    async fn call_here(&self, request: Request<'_>, started: Instant) -> (Result<Answer>, Usage) {
        // `config-keys` runs without configuration: its answer must not depend on it.
        let tag = match request {
            Request::ConfigKeys => Tag {
                config: Arc::new(ModuleConfig::default()),
                ..self.tag.clone()
            },
            Request::Batch(_) | Request::Init => self.tag.clone(),
        };
        let state = ModuleState::new(tag, &self.limits, HttpPolicy::new(self.outbound.clone()));
        let mut store = Store::new(self.engine(), state);
        store.limiter(|state| &mut state.limiter);
        // What the module hands over (its answer, a host call's arguments) is copied into host
        // memory up to this bound, and refused past it before it is copied.
        store.set_hostcall_fuel(self.transfer_bound(request));
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
            let instance = self.pre.instance.instantiate_async(&mut store).await?;
            self.ask(&mut store, &instance, request).await
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
        let result = self.judge(
            request,
            result,
            store.data().limiter.hit,
            store.data().refused_request(),
        );
        drop(store);
        (result, usage)
    }

    /// Calls the function `request` asks for, by the module's contract version.
    async fn ask(
        &self,
        store: &mut Store<ModuleState>,
        instance: &Instance,
        request: Request<'_>,
    ) -> wasmtime::Result<Answered> {
        let batch = match request {
            Request::Batch(batch) => batch,
            Request::ConfigKeys | Request::Init => {
                let Some(lifecycle) = &self.pre.lifecycle else {
                    return Ok(Ok(match request {
                        Request::ConfigKeys => Answer::Keys(None),
                        _ => Answer::Initialized,
                    }));
                };
                let lifecycle = lifecycle.load(&mut *store, instance)?;
                return Ok(match request {
                    Request::ConfigKeys => {
                        Ok(Answer::Keys(lifecycle.call_config_keys(&mut *store).await?))
                    }
                    _ => match lifecycle.call_init(&mut *store).await? {
                        Ok(()) => Ok(Answer::Initialized),
                        Err(message) => Err(Refusal::Message(message)),
                    },
                });
            }
        };
        let answer = match &self.pre.exports {
            Exports::Transform(indices) => indices
                .load(&mut *store, instance)?
                .call_transform(&mut *store, batch)
                .await?
                .map(Outcome::Transformed)
                .map_err(Refusal::Processor),
            Exports::Destination(indices) => indices
                .load(&mut *store, instance)?
                .call_deliver(&mut *store, batch)
                .await?
                .map(Outcome::Delivered)
                .map_err(Refusal::Processor),
            Exports::LegacyTransform(indices) => indices
                .load(&mut *store, instance)?
                .call_transform(&mut *store, &legacy::Batch::from_current(batch))
                .await?
                .map(|rows| {
                    Outcome::Transformed(Transformed {
                        rows,
                        rejections: Vec::new(),
                    })
                })
                .map_err(Refusal::Message),
            Exports::LegacyDestination(indices) => indices
                .load(&mut *store, instance)?
                .call_deliver(&mut *store, &legacy::Batch::from_current(batch))
                .await?
                .map(|rejections| {
                    Outcome::Delivered(rejections.into_iter().map(Rejection::from).collect())
                })
                .map_err(|error| Refusal::Processor(error.into())),
        };
        Ok(answer.map(Answer::Batch))
    }

    /// The hostcall fuel of a call: by the batch, or the floor for `lifecycle` calls (a list
    /// of keys, a message).
    pub(super) fn transfer_bound(&self, request: Request<'_>) -> usize {
        match request {
            Request::Batch(batch) => transfer::bound(self.world, &self.limits, &batch.rows),
            Request::ConfigKeys | Request::Init => {
                transfer::bound(World::Destination, &self.limits, "[]")
            }
        }
    }
}
