//! Source connection pools. A pipeline run alone has a pool of its own, of two connections
//! (one reads ahead while a batch is delivered). The pipelines of a pipelines file that read
//! the same database share one pool instead, of at most `max_source_connections`: a worker
//! with hundreds of pipelines on one server would otherwise use up its `max_connections`.
//!
//! Sharing is safe because every source statement runs on the pool by itself: no source holds
//! a connection, a session setting or a transaction across statements.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use sqlx::{Database, Pool};

/// Connections of each shared pool, once [`share`] was called.
static SHARED: OnceLock<u32> = OnceLock::new();

/// A shared pool, opened by the first pipeline that needs it while the others of its database
/// wait (and only those: a database that is slow to answer holds up no other).
type Shared = Arc<tokio::sync::OnceCell<Box<dyn Any + Send + Sync>>>;

/// The shared pools, by driver and connection options (a database, as one user, with the
/// same session settings).
static POOLS: LazyLock<Mutex<HashMap<String, Shared>>> = LazyLock::new(Default::default);

/// From now on, sources of the same database share one pool of at most `max_connections`.
/// The first call wins: a process has one setting.
pub fn share(max_connections: u32) {
    let _ = SHARED.set(max_connections.max(1));
}

/// The pool for `options`: the shared one of its database if sharing is on (opened on first
/// use), a new one of its own otherwise. A pool is opened after one plain connection attempt,
/// so that a refused or rejected connection reports its own cause at once ("connection
/// refused", "too many clients") instead of a pool timeout.
pub(crate) async fn open<DB: Database>(
    options: <DB::Connection as sqlx::Connection>::Options,
) -> std::result::Result<Pool<DB>, sqlx::Error> {
    let Some(&max) = SHARED.get() else {
        return connect::<DB>(options, 2, Duration::from_secs(15)).await;
    };
    let key = format!("{}\0{options:?}", std::any::type_name::<DB>());
    let shared: Shared = POOLS
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .entry(key)
        .or_default()
        .clone();
    // Pipelines wait their turn for a connection: longer than alone, since many share it. A
    // failed first connection leaves the cell empty, for the next pipeline to try again.
    let pool = shared
        .get_or_try_init(move || async move {
            let pool = connect::<DB>(options, max, Duration::from_secs(120)).await?;
            Ok::<_, sqlx::Error>(Box::new(pool) as Box<dyn Any + Send + Sync>)
        })
        .await?;
    pool.downcast_ref::<Pool<DB>>()
        .cloned()
        .ok_or_else(|| sqlx::Error::Configuration("a shared pool of another driver".into()))
}

async fn connect<DB: Database>(
    options: <DB::Connection as sqlx::Connection>::Options,
    max_connections: u32,
    acquire_timeout: Duration,
) -> std::result::Result<Pool<DB>, sqlx::Error> {
    use sqlx::{ConnectOptions, Connection};
    options.connect().await?.close().await?;
    sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_with(options)
        .await
}
