//! What a call of a module comes to, judged once it returned. What a call may do wrong (trap,
//! limit, deadline, an answer too large) becomes an error naming the module and the batch;
//! what a module answers about the batch as a whole (retry later, fatal) becomes the error
//! the sync loop acts on: retry later the same way for transforms and destinations, fatal
//! as a stop for a destination and as a failure poison isolation may split for a transform.
//! A retry-later after the host refused one of the call's requests by policy is a stop too:
//! the same policy would refuse the same request at every retry ([`answer_error`]); so is a
//! trap or a deadline after one ([`after_refusal`]). The call itself runs in `call.rs`.

use std::time::Duration;

use tokio::time::error::Elapsed;
use wasmtime::Trap;

use super::call::{Answer, Answered, Refusal, Request};
use super::contract::bindings::ProcessorError;
use super::http::refused::Refused;
use super::sched::limits;
use super::text::transfer;
use super::{Batch, Module, World};
use crate::model::error::{Error, ErrorKind, Result};

impl Module {
    /// What became of a call: the module's answer, or the error it comes to (see the module
    /// docs). `memory_hit` says whether the call ran into its memory limit, `refused` is the
    /// first request of the call the host refused.
    pub(super) fn judge(
        &self,
        request: Request<'_>,
        result: std::result::Result<wasmtime::Result<Answered>, Elapsed>,
        memory_hit: bool,
        refused: Option<Refused>,
    ) -> Result<Answer> {
        match result {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(Refusal::Processor(error)))) => {
                Err(self.processor_error(request, error, refused.as_ref()))
            }
            Ok(Ok(Err(Refusal::Message(message)))) => {
                Err(after_refusal(self.refused(request, &message), refused))
            }
            Ok(Err(err)) => Err(after_refusal(
                self.trap_error(request, &err, memory_hit),
                refused,
            )),
            Err(_elapsed) => Err(after_refusal(self.past_deadline(request), refused)),
        }
    }

    /// What a module's retry-later or fatal answer means for the sync loop: see
    /// [`answer_error`]. `refused` is the first request of the call the host refused.
    fn processor_error(
        &self,
        request: Request<'_>,
        error: ProcessorError,
        refused: Option<&Refused>,
    ) -> Error {
        let Request::Batch(batch) = request else {
            return self.failure(request, "answered a lifecycle call like a batch", None);
        };
        let module = format!("{} {}", self.world.name(), self.tag.module);
        answer_error(
            &module,
            self.world,
            batch,
            error,
            |said| self.bounded(said),
            refused,
        )
    }

    fn trap_error(&self, request: Request<'_>, err: &wasmtime::Error, memory_hit: bool) -> Error {
        let limits = &self.limits;
        if memory_hit {
            return self.failure(
                request,
                &format!(
                    "exceeded its memory limit of {} MiB (linear memory and tables)",
                    limits.memory >> 20
                ),
                Some("raise --memory-limit if the module needs more"),
            );
        }
        if let Some((what, hint)) = limits::host_limit_hit(err, limits) {
            return self.failure(request, &what, Some(hint));
        }
        if transfer::exceeded(err) {
            let bound = self.transfer_bound(request);
            let (what, hint) = transfer::exceeded_message(self.world, limits, bound);
            return self.failure(request, &what, Some(hint));
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => self.past_deadline(request),
            Some(Trap::OutOfFuel) => self.failure(
                request,
                &format!(
                    "ran out of fuel ({} units per batch)",
                    limits.fuel.unwrap_or(0)
                ),
                Some("raise --fuel if the module needs more"),
            ),
            Some(Trap::UnreachableCodeReached) => self.failure(
                request,
                "panicked or aborted (its message, if any, is in the log above)",
                None,
            ),
            Some(trap) => self.failure(request, &format!("trapped: {trap}"), None),
            None => self.failure(
                request,
                &format!("failed: {}", self.redact(&format!("{err:#}"))),
                None,
            ),
        }
    }

    /// One error for both ways a call is stopped at its deadline: interrupted while
    /// computing, or dropped while waiting.
    fn past_deadline(&self, request: Request<'_>) -> Error {
        self.failure(
            request,
            &format!(
                "exceeded its deadline of {:?} per call (--deadline)",
                self.limits.deadline
            ),
            Some("raise --deadline if the module needs more time"),
        )
    }

    /// An error string the module returned: a 0.1 transform failing its batch (a module
    /// failure, as [`Module::failure`]), or `init` refusing the configuration: input the user
    /// fixes (exit 2), with the module's own words.
    fn refused(&self, request: Request<'_>, message: &str) -> Error {
        match request {
            Request::Init => Error::invalid(format!(
                "module {} refused its configuration in pipeline {:?}: {}",
                self.tag.module,
                self.tag.pipeline,
                self.bounded(message)
            ))
            .with_hint(format!(
                "fix the configuration of {} (--set, --secret or the pipelines file); nothing was read",
                self.tag.module
            )),
            _ => self.failure(
                request,
                &format!("returned an error: {}", self.bounded(message)),
                None,
            ),
        }
    }

    /// A failed call: on a batch, a module failure the sync loop retries (and may isolate);
    /// at start, a fault of the module that stops the run.
    fn failure(&self, request: Request<'_>, what: &str, hint: Option<&str>) -> Error {
        let error = match request {
            Request::Batch(batch) => Error::new(
                ErrorKind::Module,
                format!(
                    "module {} {what} on batch {} of pipeline {:?}",
                    self.tag.module, batch.id, batch.pipeline
                ),
            ),
            Request::ConfigKeys => Error::fatal(format!(
                "module {} {what} when asked for its configuration keys, in pipeline {:?}",
                self.tag.module, self.tag.pipeline
            )),
            Request::Init => Error::fatal(format!(
                "module {} {what} in its init, before any row was read, in pipeline {:?}",
                self.tag.module, self.tag.pipeline
            )),
        };
        match hint {
            Some(hint) => error.with_hint(hint),
            None => error,
        }
    }
}

/// A call that failed after the host refused one of its requests by policy (a panic on the
/// refused response, a deadline spent trying it again) failed for the refusal, most likely:
/// the same policy refuses the same request at every retry, so a batch is not retried (nor
/// split to look for a row at fault) but stops the pipeline at once, and every error says what
/// the host refused and how to allow it.
fn after_refusal(error: Error, refused: Option<Refused>) -> Error {
    let Some(refused) = refused else {
        return error;
    };
    let hint = error.hint().map(str::to_owned);
    let message = format!("{error}, after {}", refused.because());
    let error = match error.kind() {
        ErrorKind::Module => Error::fatal(format!("{message}; retrying cannot help")),
        kind => Error::new(kind, message),
    };
    match hint {
        Some(hint) => error.with_hint(hint),
        None => error,
    }
}

/// What `module`'s retry-later or fatal answer on `batch` means for the sync loop: the batch
/// comes again (after the delay asked), or it is not tried again. A destination's fatal is
/// about the destination (a 401): the pipeline stops. A transform's fatal is about its input,
/// and may be one row's fault (a `?` on a row it cannot parse): poison isolation looks for the
/// rows at fault before the pipeline stops ([`ErrorKind::TransformFatal`]).
///
/// When the host refused one of the call's requests by policy (`refused`), the module may
/// not know it (`fetch()` rejects alike whatever happened) and ask to retry; but the same
/// policy refuses the same request at every retry, so the batch fails for good at once, as a
/// destination's fatal does, saying what to fix. A fatal answer says it too. `said` keeps
/// what of a module's message may be shown (bounded, secrets masked).
fn answer_error(
    module: &str,
    world: World,
    batch: &Batch,
    error: ProcessorError,
    said: impl Fn(&str) -> String,
    refused: Option<&Refused>,
) -> Error {
    match error {
        ProcessorError::RetryLater(retry) => match refused {
            None => Error::retry_later(
                format!(
                    "{module} asked to retry batch {} later: {}",
                    batch.id,
                    said(&retry.message)
                ),
                retry.after_ms.map(Duration::from_millis),
            ),
            Some(refused) => Error::fatal(format!(
                "{module} asked to retry batch {} of pipeline {:?} later ({}), but {}; retrying cannot help",
                batch.id,
                batch.pipeline,
                said(&retry.message),
                refused.because()
            )),
        },
        ProcessorError::Fatal(message) => {
            let also = refused.map_or_else(String::new, |refused| format!("; {}", refused.because()));
            let message = said(&message);
            match world {
                World::Transform => Error::new(
                    ErrorKind::TransformFatal,
                    format!(
                        "{module} answered fatal for batch {} of pipeline {:?}: {message}{also}",
                        batch.id, batch.pipeline
                    ),
                ),
                World::Destination => Error::fatal(format!(
                    "{module} stopped pipeline {:?} at batch {}: {message}{also}",
                    batch.pipeline, batch.id
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::contract::bindings::Retry;

    fn batch() -> Batch {
        Batch {
            id: "b-7".into(),
            pipeline: "hook".into(),
            rows: "[]".into(),
        }
    }

    fn not_allowed() -> Refused {
        Refused {
            origin: "https://typo.example:443".into(),
            why: "its origin is not on the allow-list; allow it with --allow-host https://typo.example:443".into(),
        }
    }

    fn retry_later(message: &str) -> ProcessorError {
        ProcessorError::RetryLater(Retry {
            message: message.into(),
            after_ms: Some(5_000),
        })
    }

    fn fatal(message: &str) -> ProcessorError {
        ProcessorError::Fatal(message.into())
    }

    fn judge(world: World, error: ProcessorError, refused: Option<&Refused>) -> Error {
        answer_error(
            "destination js_webhook",
            world,
            &batch(),
            error,
            str::to_owned,
            refused,
        )
    }

    #[test]
    fn a_retry_later_without_a_refusal_is_retried_after_the_delay_asked() {
        let error = judge(World::Destination, retry_later("no response"), None);
        assert_eq!(error.kind(), ErrorKind::RetryLater);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(5)));
        assert_eq!(
            error.to_string(),
            "destination js_webhook asked to retry batch b-7 later: no response"
        );
    }

    #[test]
    fn a_retry_later_after_a_refusal_stops_the_pipeline_naming_the_flag() {
        for world in [World::Destination, World::Transform] {
            let error = judge(world, retry_later("no response"), Some(&not_allowed()));
            assert_eq!(error.kind(), ErrorKind::Fatal, "{world:?}");
            // A stop about the destination: poison isolation must not split the batch.
            assert!(!error.kind().may_be_a_row());
            assert_eq!(error.retry_after(), None);
            assert_eq!(
                error.to_string(),
                "destination js_webhook asked to retry batch b-7 of pipeline \"hook\" later (no response), \
                 but the host refused its request to https://typo.example:443: its origin is not on the \
                 allow-list; allow it with --allow-host https://typo.example:443; retrying cannot help"
            );
        }
    }

    #[test]
    fn a_fatal_answer_keeps_its_kind_and_adds_the_refusal() {
        let refused = not_allowed();
        let destination = judge(World::Destination, fatal("bad credentials"), Some(&refused));
        assert_eq!(destination.kind(), ErrorKind::Fatal);
        assert_eq!(
            destination.to_string(),
            format!(
                "destination js_webhook stopped pipeline \"hook\" at batch b-7: bad credentials; \
                 the host refused its request to {refused}"
            )
        );
        let transform = judge(World::Transform, fatal("bad row"), Some(&refused));
        assert_eq!(transform.kind(), ErrorKind::TransformFatal);
        assert!(
            transform.to_string().ends_with(&format!(
                "bad row; the host refused its request to {refused}"
            )),
            "{transform}"
        );
        let alone = judge(World::Destination, fatal("bad credentials"), None);
        assert!(alone.to_string().ends_with(": bad credentials"), "{alone}");
    }

    #[test]
    fn the_module_message_is_kept_as_said() {
        let error = answer_error(
            "destination js_webhook",
            World::Destination,
            &batch(),
            retry_later("token s3cret"),
            |said| said.replace("s3cret", "***"),
            Some(&not_allowed()),
        );
        assert!(error.to_string().contains("(token ***)"), "{error}");
    }
}
