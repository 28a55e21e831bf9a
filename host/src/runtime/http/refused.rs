//! What the host refused a call by policy. The guest learns of a refusal only as an error
//! code (`HttpRequestDenied` and the like), which some languages blur into "no response"
//! (JavaScript's `fetch()` rejects alike whatever happened), so a module may ask to retry a
//! batch that the same policy will refuse every time. Each call keeps the first request the
//! host refused, and the call's answer is judged with it (`answer.rs`).

use std::sync::{Arc, Mutex};

use wasmtime_wasi_http::Error as HttpError;

/// A request the host refused by policy: its origin (a path or query may carry a secret, so
/// only the origin) and why, naming the flag that would let it through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub origin: String,
    pub why: String,
}

impl Refused {
    /// What a module's error adds about the refusal, in one wording for every kind of error.
    pub fn because(&self) -> String {
        format!("the host refused its request to {self}")
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.why)
    }
}

/// Why a request got no response: the host refused it by policy, or it failed on the way.
/// Either way the guest is told the error code; a refusal is also kept for the call.
pub(in crate::runtime) enum NotSent {
    Refused(Refused, HttpError),
    Failed(HttpError),
}

impl From<HttpError> for NotSent {
    fn from(error: HttpError) -> Self {
        NotSent::Failed(error)
    }
}

/// The first request one call had refused. Shared with the requests' tasks, which outlive the
/// borrow of the policy that starts them.
#[derive(Clone, Default)]
pub(in crate::runtime) struct FirstRefusal(Arc<Mutex<Option<Refused>>>);

impl FirstRefusal {
    /// Keeps `refused` unless an earlier refusal was kept.
    pub(in crate::runtime) fn keep(&self, refused: Refused) {
        let mut first = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        first.get_or_insert(refused);
    }

    /// What the guest is told of a request that went unanswered; a refusal is kept.
    pub(in crate::runtime) fn error_code(&self, not_sent: NotSent) -> HttpError {
        match not_sent {
            NotSent::Refused(refused, error) => {
                self.keep(refused);
                error
            }
            NotSent::Failed(error) => error,
        }
    }

    pub(in crate::runtime) fn first(&self) -> Option<Refused> {
        self.0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}
