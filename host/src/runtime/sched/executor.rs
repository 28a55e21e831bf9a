//! Where guest code runs: a small async runtime of its own, one worker thread, apart from
//! the host's runtime that reads sources, writes checkpoints and serves metrics.
//!
//! Why a runtime of its own: on the host's two worker threads a guest that computes holds its
//! thread for an epoch tick (10 ms) at a time, and every task that thread's queue holds (a
//! healthy pipeline's page read, its checkpoint, a wakeup) waits behind that slice. With
//! guest code here, host tasks never wait behind guest code, and guest code of several
//! pipelines takes turns on this thread as the fairness scheduler ([`super::fairness`]) says.
//! `bench/many-pipelines.sh --fault-isolation` measured the healthy tenant at a median 0.40x
//! of its solo speed with guests on the host's workers, and 0.59x with them here (a loaded
//! machine; see docs/internals/runtime.md).
//!
//! Everything a call starts runs here too: wasi-http spawns its outgoing requests on the
//! current runtime, and the HTTP client its connections. All of it belongs to the call's
//! store and is dropped with it, at the end of the call or at its deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use tokio::runtime::{Builder, Runtime};
use tokio::task::{JoinError, JoinHandle};

/// Threads that run guest code: one core of the two, the other left to the host.
const GUEST_THREADS: usize = 1;

static GUESTS: LazyLock<Option<Runtime>> = LazyLock::new(|| {
    Builder::new_multi_thread()
        .worker_threads(GUEST_THREADS)
        .thread_name("tidemark-guest")
        .enable_all()
        .build()
        .inspect_err(|err| {
            tracing::warn!("cannot start the guest runtime ({err}); guest code runs on the host's")
        })
        .ok()
});

/// Starts `call` on the guest runtime, at once; the future returned waits for its result. A
/// caller that stops waiting (a pipeline stopped, a batch abandoned) cancels the call, and so
/// drops what it holds.
pub fn spawn<F>(call: F) -> impl Future<Output = Result<F::Output, JoinError>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = match GUESTS.as_ref() {
        Some(guests) => guests.spawn(call),
        None => tokio::spawn(call),
    };
    CancelOnDrop(task)
}

/// A task that is cancelled when its caller stops waiting for it.
struct CancelOnDrop<T>(JoinHandle<T>);

impl<T> Future for CancelOnDrop<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for CancelOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
