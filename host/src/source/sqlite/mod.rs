//! SQLite source, opened read-only.
//!
//! SQLite types values, not columns, so every value is rendered by its own storage class,
//! and cursor and key values keep theirs in the watermark text: `i:42`, `r:1.5`, `t:2024-…`.
//! Cursor values are compared as SQLite compares them, so a text cursor must use one format
//! throughout (ISO 8601, as `datetime('now')` and most ORMs write it).

pub(crate) mod keys;
pub(crate) mod pages;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteValueRef};
use sqlx::{Decode, Row, TypeInfo, ValueRef};

use super::keyset::{quote_ident, Keyset, Statement, Style};
use super::plan::{self, ColumnDescription, CursorType, Dialect, Plan, TableDescription};
use super::query;
use super::{Clock, Page, Source, TableSpec, Until};
use crate::model::error::{Error, Result};
use crate::model::json;
use crate::model::Position;
use crate::source::sqlite::pages::{Layout, PageReader, Tagged};

pub struct SqliteSource {
    pub(super) pool: SqlitePool,
    pub(super) plan: Plan,
    pub(super) keyset: Keyset,
    /// Steps the keyset pages (see `sqlite_pages`).
    pages: PageReader,
}

const DIALECT: Dialect = Dialect {
    missing_table_hint: "check --table; list the tables with `sqlite3 DB .tables`",
    cursor_hint: "pass --cursor with a date, time or integer column",
    key_type_hint: "pass --key with an integer or text column",
    // A primary key that is not an INTEGER may hold NULL whatever its declaration says: the
    // rows are checked instead (see `SqliteSource::connect`).
    refuses_nullable_keys: false,
};

/// Reads the table's columns, primary key and indexes with the `pragma_*` functions; `None`
/// when there is no such table.
async fn describe(
    pool: &SqlitePool,
    schema: &str,
    name: &str,
    table: &str,
) -> Result<Option<TableDescription>> {
    // (name, declared type, not null, position in the primary key or 0)
    let catalog: Vec<(String, String, bool, i64)> = sqlx::query_as(
        "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1, ?2) ORDER BY cid",
    )
    .bind(name)
    .bind(schema)
    .fetch_all(pool)
    .await
    .map_err(|err| Error::database(format!("cannot read the columns of {table:?}"), err))?;
    if catalog.is_empty() {
        return Ok(None);
    }
    let mut primary: Vec<&(String, String, bool, i64)> =
        catalog.iter().filter(|column| column.3 > 0).collect();
    primary.sort_by_key(|column| column.3);
    // Each index: whether it is unique, how many columns it has, and the column it starts
    // with (NULL for an expression).
    let indexes: Vec<(bool, i64, Option<String>)> = sqlx::query_as(
        "SELECT il.\"unique\" = 1, (SELECT COUNT(*) FROM pragma_index_info(il.name, ?2)), \
                (SELECT name FROM pragma_index_info(il.name, ?2) WHERE seqno = 0) \
         FROM pragma_index_list(?1, ?2) il",
    )
    .bind(name)
    .bind(schema)
    .fetch_all(pool)
    .await
    .map_err(|err| Error::database("cannot read the indexes of the table", err))?;
    Ok(Some(TableDescription {
        columns: catalog
            .iter()
            .map(|(name, declared, not_null, _)| describe_column(name, declared, !not_null))
            .collect(),
        primary_key: primary.iter().map(|column| column.0.clone()).collect(),
        unique_columns: indexes
            .iter()
            .filter(|(unique, width, _)| *unique && *width == 1)
            .filter_map(|(_, _, column)| column.clone())
            .collect(),
        index_leaders: indexes
            .into_iter()
            .filter_map(|(_, _, column)| column)
            .collect(),
    }))
}

/// SQLite types values, not columns: a declared DATE or TIME, or any type that is not an
/// INTEGER, is taken for a time that settles; any value but a BLOB orders rows.
fn describe_column(name: &str, declared: &str, nullable: bool) -> ColumnDescription {
    let upper = declared.to_ascii_uppercase();
    let is_time = upper.contains("DATE") || upper.contains("TIME") || !upper.contains("INT");
    ColumnDescription {
        name: name.to_owned(),
        type_name: declared.to_owned(),
        nullable,
        cursor: Some(if is_time {
            CursorType::LocalTime
        } else {
            CursorType::Integer
        }),
        orders_rows: true,
    }
}

impl SqliteSource {
    pub async fn connect(url: &str, spec: &TableSpec) -> Result<Self> {
        let path = url.trim_start_matches("sqlite://");
        if path.is_empty()
            || (!path.starts_with(':')
                && !std::path::Path::new(path.split('?').next().unwrap_or(path)).exists())
        {
            return Err(
                Error::invalid(format!("SQLite database {path:?} does not exist")).with_hint(
                    "pass --source sqlite://PATH with the path of an existing database file",
                ),
            );
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|err| {
                Error::invalid(format!("invalid SQLite URL {url:?}: {err}"))
                    .with_hint("use sqlite://PATH")
            })?
            .read_only(true);
        crate::model::sqlite_quotes::refuse_double_quoted_strings()?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|err| Error::database(format!("cannot open {url}"), err))?;
        let table = spec.table.to_string();
        let schema = spec.table.schema.as_deref().unwrap_or("main");
        let description = describe(&pool, schema, &spec.table.name, &table).await?;
        let plan = plan::plan(spec, description.as_ref(), &DIALECT)?;
        let names: Vec<&str> = description
            .as_ref()
            .map(|table| table.columns.iter().map(|c| c.name.as_str()).collect())
            .unwrap_or_default();
        let keyset = Keyset {
            style: Style::QuestionRowValues,
            table: format!(
                "{}.{}",
                quote_ident(schema, '"'),
                quote_ident(&spec.table.name, '"')
            ),
            select_list: names
                .iter()
                .map(|name| quote_ident(name, '"'))
                .collect::<Vec<_>>()
                .join(", "),
            cursor: quote_ident(&spec.cursor, '"'),
            key: quote_ident(&plan.key_column, '"'),
            cursor_param: "{}".to_owned(),
            key_param: "{}".to_owned(),
            horizon_param: "{}".to_owned(),
        };
        // SQLite lets a non-INTEGER primary key hold NULL; such a row could never be paged.
        let null_keys: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {} WHERE {} IS NULL",
            keyset.table, keyset.key
        ))
        .fetch_one(&pool)
        .await
        .map_err(|err| Error::database("cannot check the key column", err))?;
        if null_keys > 0 {
            return Err(Error::invalid(format!(
                "key column {:?} of {table:?} holds NULL in {null_keys} rows",
                plan.key_column
            ))
            .with_hint("pass --key with a NOT NULL unique column, or fill in the missing keys"));
        }
        let layout = Layout {
            table: plan.table.clone(),
            columns: names
                .iter()
                .map(|name| ((*name).to_owned(), json::object_key(name)))
                .collect(),
            key: plan.key,
            cursor: plan.cursor,
            deleted: plan.deleted,
        };
        let pages = PageReader::open(options.get_filename(), layout)?;
        Ok(SqliteSource {
            pool,
            plan,
            keyset,
            pages,
        })
    }

    pub(super) fn bind<'q>(
        &self,
        statement: &'q Statement<'q>,
    ) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
        let mut query = sqlx::query(&statement.sql);
        for arg in &statement.args {
            query = match Tagged::parse(arg.text()) {
                Tagged::Integer(value) => query.bind(value),
                Tagged::Real(value) => query.bind(value),
                Tagged::Text(value) => query.bind(value),
            };
        }
        query
    }
}

impl Source for SqliteSource {
    async fn null_cursor_count(&mut self) -> Result<u64> {
        query::count_null_cursors(&self.plan, &self.keyset, &self.pool)
            .await
            .map_err(|err| columns_changed(&self.plan.table, err))
    }

    async fn clock(&mut self, settle: Duration) -> Result<Clock> {
        if !self.plan.cursor_type.is_time() {
            return Ok(Clock::default());
        }
        // The horizon must compare the way the stored values do, so it takes the form of the
        // newest value: unix seconds, or text with the same separator and zone suffix.
        let sql = format!(
            "SELECT {c} FROM {t} WHERE {c} IS NOT NULL ORDER BY {c} DESC LIMIT 1",
            c = self.keyset.cursor,
            t = self.keyset.table
        );
        let newest = sqlx::query(&sql)
            .fetch_optional(&self.pool)
            .await
            .map_err(|err| Error::database("cannot read the newest cursor", err))
            .map_err(|err| columns_changed(&self.plan.table, err))?;
        let Some(newest) = newest else {
            // Nothing to read yet; rows written from now on are taken by the next pass.
            return Ok(Clock {
                horizon: Some(format!("i:{}", i64::MIN)),
                now: None,
                held_back: None,
            });
        };
        let settle_secs = settle.as_secs_f64();
        let sample = query::raw(&newest, 0, self.pages.column_name(self.plan.cursor))?;
        let (horizon_sql, now_sql, tag) = match storage_class(&sample) {
            Class::Integer => (
                format!("SELECT CAST(unixepoch('now') - {settle_secs} AS INTEGER)"),
                "SELECT unixepoch('now')".to_owned(),
                "i",
            ),
            Class::Real => (
                format!("SELECT (julianday('now') - 2440587.5) * 86400.0 - {settle_secs}"),
                "SELECT (julianday('now') - 2440587.5) * 86400.0".to_owned(),
                "r",
            ),
            _ => {
                let text: &str = decode(sample).unwrap_or_default();
                let separator = if text.as_bytes().get(10) == Some(&b'T') {
                    "T"
                } else {
                    " "
                };
                let seconds = if text.as_bytes().get(19) == Some(&b'.') {
                    "%f"
                } else {
                    "%S"
                };
                let zone = if text.ends_with('Z') { "Z" } else { "" };
                let format = format!("%Y-%m-%d{separator}%H:%M:{seconds}{zone}");
                (
                    format!("SELECT strftime('{format}', 'now', '-{settle_secs} seconds')"),
                    format!("SELECT strftime('{format}', 'now')"),
                    "t",
                )
            }
        };
        let mut clock = Clock::default();
        for (sql, slot) in [(horizon_sql, &mut clock.horizon), (now_sql, &mut clock.now)] {
            let row = sqlx::query(&sql)
                .fetch_one(&self.pool)
                .await
                .map_err(|err| Error::database("cannot read the database clock", err))?;
            let value = row
                .try_get_raw(0)
                .map_err(|err| Error::fatal(err.to_string()))?;
            *slot = Some(match storage_class(&value) {
                Class::Integer => format!("{tag}:{}", decode::<i64>(value).unwrap_or_default()),
                Class::Real => format!("{tag}:{}", decode::<f64>(value).unwrap_or_default()),
                _ => format!("{tag}:{}", decode::<&str>(value).unwrap_or_default()),
            });
        }
        Ok(clock)
    }

    async fn count(&mut self, after: &Position, until: Until<'_>) -> Result<u64> {
        let statement = self.keyset.count(after, until);
        query::count(self.bind(&statement), &self.pool, "pending rows")
            .await
            .map_err(|err| columns_changed(&self.plan.table, err))
    }

    async fn read(&mut self, after: &Position, until: Until<'_>, limit: usize) -> Result<Page> {
        let statement = self.keyset.select(after, until, limit);
        self.pages
            .read(&statement, limit)
            .await
            .map_err(|err| columns_changed(&self.plan.table, err))
    }

    fn lag_seconds(&self, now: &str, cursor: &str) -> Option<f64> {
        if !self.plan.cursor_type.is_time() {
            return None;
        }
        match (Tagged::parse(now), Tagged::parse(cursor)) {
            (Tagged::Integer(now), Tagged::Integer(cursor)) => Some((now - cursor) as f64),
            (Tagged::Real(now), Tagged::Real(cursor)) => Some(now - cursor),
            (Tagged::Text(now), Tagged::Text(cursor)) => super::timestamp_lag(true, now, cursor),
            _ => None,
        }
    }

    fn key_column(&self) -> &str {
        &self.plan.key_column
    }
}

/// `err`, or what it means when SQLite finds a column of the table gone ("no such column:
/// score"): the table was altered while the pipeline ran. (Without `sqlite_quotes`, SQLite
/// would have read the column's quoted name as a string, and delivered it in every row.)
fn columns_changed(table: &str, err: Error) -> Error {
    match vanished_column(&format!("{err:#}")) {
        Some(column) => Error::fatal(format!(
            "table {table:?} no longer has column {column:?} (dropped or renamed while the \
             pipeline ran)"
        ))
        .with_hint(
            "restart the pipeline: it reads the table's columns when it starts, then every \
             row it has not delivered yet",
        ),
        None => err,
    }
}

/// The column of SQLite's "no such column: "score" - should this be a string literal in
/// single-quotes?" (or "no such column: score"), in an error's text.
fn vanished_column(text: &str) -> Option<&str> {
    let rest = text.split_once("no such column: ")?.1;
    Some(match rest.strip_prefix('"') {
        Some(quoted) => {
            quoted
                .split_once("\" - should this be")
                .or_else(|| quoted.split_once('"'))?
                .0
        }
        None => rest.split(':').next().unwrap_or(rest).trim(),
    })
}

enum Class {
    Null,
    Integer,
    Real,
    Text,
    Blob,
}

fn storage_class(value: &SqliteValueRef<'_>) -> Class {
    if value.is_null() {
        return Class::Null;
    }
    match value.type_info().name() {
        "INTEGER" | "BOOLEAN" => Class::Integer,
        "REAL" => Class::Real,
        "BLOB" => Class::Blob,
        _ => Class::Text,
    }
}

fn decode<'r, T: Decode<'r, Sqlite>>(
    value: SqliteValueRef<'r>,
) -> Result<T, sqlx::error::BoxDynError> {
    T::decode(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vanished_column_is_named_as_sqlite_names_it() {
        let quoted = "cannot read from \"users\": no such column: \"last \"name\" - should this \
                      be a string literal in single-quotes?: Error code 1: SQL error";
        assert_eq!(vanished_column(quoted), Some("last \"name"));
        assert_eq!(
            vanished_column("(code: 1) no such column: score"),
            Some("score")
        );
        assert_eq!(vanished_column("database is locked"), None);
    }
}
