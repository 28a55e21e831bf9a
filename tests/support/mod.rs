//! The harness: databases ([`db`]), the host binary ([`host`]), its output ([`lines`]),
//! temporary directories ([`temp`]), the module components under test ([`guests`]) and a
//! fake HTTP receiver for destinations ([`http_server`]).

pub mod db;
pub mod guests;
pub mod host;
pub mod http_server;
pub mod lines;
pub mod temp;
pub mod tenants;
pub mod workers;

pub use db::{Backend, Col, TestDb, Val};
pub use host::Host;

use chrono::{NaiveDate, NaiveDateTime};

/// One `#[tokio::test]` per database for each scenario (an `async fn(Backend)`):
/// `on_databases!([postgres => Postgres, sqlite => Sqlite], [a, b])` makes `postgres::a`,
/// `postgres::b`, `sqlite::a` and `sqlite::b`.
macro_rules! on_databases {
    ([$($module:ident => $backend:ident),+ $(,)?], $scenarios:tt $(,)?) => {
        $(crate::support::tests_on!($module, $backend, $scenarios);)+
    };
}

/// Module `module` with one test per scenario of the lists, run on `backend`.
macro_rules! tests_on {
    ($module:ident, $backend:ident, $([$($scenario:ident),* $(,)?]),+ $(,)?) => {
        mod $module {
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(crate::support::Backend::$backend).await;
                }
            )*)+
        }
    };
}

pub(crate) use {on_databases, tests_on};

/// A fixed past instant: 2024-01-01 00:00:00 plus `micros` microseconds.
pub fn at(micros: i64) -> NaiveDateTime {
    ts("2024-01-01 00:00:00.000000") + chrono::Duration::microseconds(micros)
}

/// Parses `YYYY-MM-DD HH:MM:SS.ffffff`.
pub fn ts(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap_or_else(|err| panic!("bad test timestamp {text:?}: {err}"))
}

/// Midnight of a date, for building timestamps.
pub fn day(year: i32, month: u32, date: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(year, month, date)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("valid date")
}
