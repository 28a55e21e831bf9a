//! The harness: databases ([`db`]), the host binary ([`host`]), its output ([`lines`]),
//! temporary directories ([`temp`]) and the processor components under test ([`guests`]).

pub mod db;
pub mod guests;
pub mod host;
pub mod lines;
pub mod temp;

pub use db::{Backend, Col, TestDb, Val};
pub use host::Host;

use chrono::{NaiveDate, NaiveDateTime};

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
