//! The driver a URL's scheme picks, and one [`Source`] over all of them.
//!
//! [`Source`] returns `impl Future`, so it has no trait objects; [`AnySource`] is an enum
//! that delegates instead, and the rest of the host holds that.

use std::time::Duration;

use super::mysql::MySqlSource;
use super::postgres::PgSource;
use super::sqlite::SqliteSource;
use super::{Clock, Page, Source, TableSpec, Until};
use crate::model::error::{Error, Result};
use crate::model::redact::redact_url;
use crate::model::Position;

/// The kinds of database Tidemark reads, picked by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Driver {
    Postgres,
    MySql,
    Sqlite,
}

impl Driver {
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some("postgres" | "postgresql") => Ok(Driver::Postgres),
            Some("mysql" | "mariadb") => Ok(Driver::MySql),
            Some("sqlite") => Ok(Driver::Sqlite),
            _ => Err(
                Error::invalid(format!("unsupported database URL {:?}", redact_url(url)))
                    .with_hint(
                        "use postgres://USER@HOST/DB, mysql://USER@HOST/DB or sqlite://PATH",
                    ),
            ),
        }
    }

    /// A cursor or key value as a person reads it. SQLite watermarks carry the storage class
    /// of their value (`i:42` is the integer 42), which is left out; other drivers' values
    /// show as they are.
    pub fn shown_value(self, value: &str) -> &str {
        match self {
            Driver::Sqlite => ["i:", "r:", "t:"]
                .iter()
                .find_map(|tag| value.strip_prefix(tag))
                .unwrap_or(value),
            Driver::Postgres | Driver::MySql => value,
        }
    }

    /// A position with its values as [`Driver::shown_value`] shows them.
    pub fn shown_position(self, position: &Position) -> String {
        match position {
            Position::After(mark) => format!(
                "({}, {})",
                self.shown_value(&mark.cursor),
                self.shown_value(&mark.key)
            ),
            Position::Nulls {
                after_key: Some(key),
            } => format!("(NULL, {})", self.shown_value(key)),
            other => other.to_string(),
        }
    }
}

/// Connects to the database `url` names, with the driver its scheme picks, and plans the
/// read of `spec`'s table: every error about the table, its cursor and its key comes from here.
pub async fn connect(url: &str, spec: &TableSpec) -> Result<AnySource> {
    Ok(match Driver::from_url(url)? {
        Driver::Postgres => AnySource::Postgres(PgSource::connect(url, spec).await?),
        Driver::MySql => AnySource::MySql(MySqlSource::connect(url, spec).await?),
        Driver::Sqlite => AnySource::Sqlite(SqliteSource::connect(url, spec).await?),
    })
}

/// A source of any driver.
pub enum AnySource {
    Postgres(PgSource),
    MySql(MySqlSource),
    Sqlite(SqliteSource),
}

/// Runs the same expression on whichever source is inside.
macro_rules! delegate {
    ($self:expr, $source:ident => $body:expr) => {
        match $self {
            AnySource::Postgres($source) => $body,
            AnySource::MySql($source) => $body,
            AnySource::Sqlite($source) => $body,
        }
    };
}
pub(super) use delegate;

impl Source for AnySource {
    async fn null_cursor_count(&mut self) -> Result<u64> {
        delegate!(self, source => source.null_cursor_count().await)
    }

    async fn clock(&mut self, settle: Duration) -> Result<Clock> {
        delegate!(self, source => source.clock(settle).await)
    }

    async fn count(&mut self, after: &Position, until: Until<'_>) -> Result<u64> {
        delegate!(self, source => source.count(after, until).await)
    }

    async fn estimate(&mut self, after: &Position, until: Until<'_>) -> Result<u64> {
        delegate!(self, source => source.estimate(after, until).await)
    }

    async fn read(&mut self, after: &Position, until: Until<'_>, limit: usize) -> Result<Page> {
        delegate!(self, source => source.read(after, until, limit).await)
    }

    fn lag_seconds(&self, now: &str, cursor: &str) -> Option<f64> {
        delegate!(self, source => source.lag_seconds(now, cursor))
    }

    fn key_column(&self) -> &str {
        delegate!(self, source => source.key_column())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Watermark;

    #[test]
    fn drivers_follow_the_scheme() {
        assert_eq!(
            Driver::from_url("postgres://x/y").unwrap(),
            Driver::Postgres
        );
        assert_eq!(Driver::from_url("mysql://x/y").unwrap(), Driver::MySql);
        assert_eq!(Driver::from_url("sqlite://a.db").unwrap(), Driver::Sqlite);
        assert!(Driver::from_url("foo://x").is_err());
        assert!(Driver::from_url("users.db").is_err());
    }

    #[test]
    fn only_sqlite_values_lose_their_storage_class_when_shown() {
        let mark = Position::After(Watermark {
            cursor: "t:2024-01-01".into(),
            key: "i:42".into(),
        });
        assert_eq!(Driver::Sqlite.shown_position(&mark), "(2024-01-01, 42)");
        assert_eq!(
            Driver::Postgres.shown_position(&mark),
            "(t:2024-01-01, i:42)"
        );
        assert_eq!(Driver::Sqlite.shown_value("r:1.5"), "1.5");
        assert_eq!(Driver::MySql.shown_value("i:42"), "i:42");
        let nulls = Position::Nulls {
            after_key: Some("i:7".into()),
        };
        assert_eq!(Driver::Sqlite.shown_position(&nulls), "(NULL, 7)");
        assert_eq!(Driver::Sqlite.shown_position(&Position::Start), "start");
    }
}
