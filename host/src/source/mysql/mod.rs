//! MySQL and MariaDB source.
//!
//! Sessions are pinned to `time_zone = '+00:00'`: TIMESTAMP values are converted through the
//! session zone on the way out and back in, and a zone with daylight saving time would make
//! the hour it repeats ambiguous. The safe horizon takes the oldest open transaction from
//! `information_schema.innodb_trx`, which needs the PROCESS privilege. An integer cursor's
//! horizon waits for the InnoDB transactions that may hold an id (see `ids::mysql`).

pub(crate) mod horizon;
pub(crate) mod keys;
pub(crate) mod pages;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool};
use sqlx::Row;

use super::ahead::{Bound, ReadAhead};
use super::keyset::{quote_ident, Keyset, Style};
use super::plan::{self, ColumnDescription, CursorType, Dialect, Plan, TableDescription};
use super::query;
use super::{Clock, Page, Source, TableSpec, Until};
use crate::model::error::{Error, Result};
use crate::model::json;
use crate::model::Position;
use crate::source::horizon::SightsIds;
use crate::source::mysql::horizon::{is_access_denied, InnoDbIds};
use crate::source::mysql::pages::MyReads;
pub(super) use crate::source::mysql::pages::{Column, Render};

/// The least settle lag on MySQL and MariaDB (see [`MySqlSource::clock`]).
pub const MIN_SETTLE: Duration = Duration::from_secs(1);

pub struct MySqlSource {
    pub(super) pool: MySqlPool,
    pub(super) plan: Arc<Plan>,
    pub(super) keyset: Arc<Keyset>,
    pub(super) columns: Arc<Vec<Column>>,
    ahead: ReadAhead,
    time_zone: String,
    sees_all_transactions: bool,
    /// The horizon of an integer cursor.
    ids: InnoDbIds,
}

/// A column as `information_schema.COLUMNS` describes it, types in lowercase.
struct CatalogColumn {
    name: String,
    data_type: String,
    column_type: String,
    nullable: bool,
}

const DIALECT: Dialect = Dialect {
    missing_table_hint: "check --table; qualify it as DATABASE.TABLE outside the URL's database",
    cursor_hint: "pass --cursor with a TIMESTAMP or DATETIME column that is set on every \
                  change, or an integer that only grows",
    key_type_hint: "pass --key with an integer or CHAR/VARCHAR column",
    refuses_nullable_keys: true,
};

/// Reads the table's columns, primary key and indexes from `information_schema`; `None`
/// when there is no such table.
async fn describe(
    pool: &MySqlPool,
    schema: &str,
    name: &str,
    table: &str,
) -> Result<Option<(Vec<CatalogColumn>, TableDescription)>> {
    let mut catalog: Vec<CatalogColumn> = sqlx::query(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), \
                CAST(COLUMN_TYPE AS CHAR), CAST(IS_NULLABLE AS CHAR) \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(schema)
    .bind(name)
    .fetch_all(pool)
    .await
    .map_err(|err| Error::database(format!("cannot read the columns of {table:?}"), err))?
    .into_iter()
    .map(|row| CatalogColumn {
        name: row.get(0),
        data_type: row.get::<String, _>(1).to_ascii_lowercase(),
        column_type: row.get::<String, _>(2).to_ascii_lowercase(),
        nullable: row.get::<String, _>(3) == "YES",
    })
    .collect();
    if catalog.is_empty() {
        return Ok(None);
    }

    // MariaDB's JSON is LONGTEXT with a json_valid() check: inline those as JSON too.
    let json_checked: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(CHECK_CLAUSE AS CHAR) FROM information_schema.CHECK_CONSTRAINTS \
         WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ? AND CHECK_CLAUSE LIKE 'json_valid(%'",
    )
    .bind(schema)
    .bind(name)
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    for column in &mut catalog {
        let check = format!("json_valid({})", quote_ident(&column.name, '`'));
        if column.data_type == "longtext" && json_checked.contains(&check) {
            column.data_type = "json".to_owned();
        }
    }

    // One row per indexed column: index, column ('' for an expression), position, unique.
    let index_columns: Vec<(String, String, i64, bool)> = sqlx::query_as(
        "SELECT CAST(INDEX_NAME AS CHAR), CAST(COALESCE(COLUMN_NAME, '') AS CHAR), \
                CAST(SEQ_IN_INDEX AS SIGNED), NON_UNIQUE = 0 \
         FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
         ORDER BY INDEX_NAME, SEQ_IN_INDEX",
    )
    .bind(schema)
    .bind(name)
    .fetch_all(pool)
    .await
    .map_err(|err| Error::database("cannot read the indexes of the table", err))?;
    let mut description = TableDescription {
        columns: catalog.iter().map(describe_column).collect(),
        ..TableDescription::default()
    };
    for (index, column, position, unique) in &index_columns {
        let width = index_columns.iter().filter(|other| other.0 == *index);
        if index == "PRIMARY" {
            description.primary_key.push(column.clone());
        }
        if *unique && width.count() == 1 {
            description.unique_columns.push(column.clone());
        }
        if *position == 1 {
            description.index_leaders.push(column.clone());
        }
    }
    Ok(Some((catalog, description)))
}

/// Which types make a cursor, and which a key: integers, and text compared as stored.
fn describe_column(column: &CatalogColumn) -> ColumnDescription {
    ColumnDescription {
        name: column.name.clone(),
        type_name: column.data_type.clone(),
        nullable: column.nullable,
        cursor: match column.data_type.as_str() {
            "timestamp" => Some(CursorType::Instant),
            "datetime" => Some(CursorType::LocalTime),
            _ if is_integer(column) => Some(CursorType::Integer),
            _ => None,
        },
        orders_rows: is_integer(column) || matches!(column.data_type.as_str(), "char" | "varchar"),
    }
}

fn is_integer(column: &CatalogColumn) -> bool {
    ["tinyint", "smallint", "mediumint", "int", "bigint"].contains(&column.data_type.as_str())
}

impl MySqlSource {
    pub async fn connect(url: &str, spec: &TableSpec) -> Result<Self> {
        let url = url.replacen("mariadb://", "mysql://", 1);
        let options = MySqlConnectOptions::from_str(&url)
            .map_err(|err| {
                Error::invalid(format!(
                    "invalid MySQL URL {:?}: {err}",
                    crate::model::redact::redact_url(&url)
                ))
                .with_hint("use mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
            })?
            .timezone(Some("+00:00".to_owned()));
        let pool: MySqlPool = query::open_pool(options).await.map_err(|err| {
            Error::database(
                format!(
                    "cannot connect to {}",
                    crate::model::redact::redact_url(&url)
                ),
                err,
            )
            .with_hint("check that the server is up and the URL (--source) is right")
        })?;
        let table = spec.table.to_string();
        let schema: Option<String> = match &spec.table.schema {
            Some(schema) => Some(schema.clone()),
            None => sqlx::query_scalar("SELECT DATABASE()")
                .fetch_one(&pool)
                .await
                .map_err(|err| Error::database("cannot read the current database", err))?,
        };
        let Some(schema) = schema else {
            return Err(
                Error::invalid(format!("table {table:?} names no database")).with_hint(
                    "qualify it as DATABASE.TABLE or put the database in the --source URL",
                ),
            );
        };
        let described = describe(&pool, &schema, &spec.table.name, &table).await?;
        let plan = plan::plan(spec, described.as_ref().map(|(_, table)| table), &DIALECT)?;
        let catalog = described.map(|(catalog, _)| catalog).unwrap_or_default();

        let mut select = Vec::with_capacity(catalog.len());
        let mut columns = Vec::with_capacity(catalog.len());
        for column in &catalog {
            let ident = quote_ident(&column.name, '`');
            let (expression, render) = select_for(column, &ident);
            select.push(expression);
            columns.push(Column {
                name: column.name.clone(),
                key: json::object_key(&column.name),
                render,
            });
        }
        let keyset = Keyset {
            style: Style::QuestionExpanded,
            table: format!(
                "{}.{}",
                quote_ident(&schema, '`'),
                quote_ident(&spec.table.name, '`')
            ),
            select_list: select.join(", "),
            cursor: quote_ident(&spec.cursor, '`'),
            key: quote_ident(&plan.key_column, '`'),
            cursor_param: param_for(&catalog[plan.cursor]),
            key_param: param_for(&catalog[plan.key]),
            // An integer horizon is compared as an integer, exactly (see `param_for`).
            horizon_param: match plan.cursor_type {
                CursorType::Integer => param_for(&catalog[plan.cursor]),
                _ => "{}".to_owned(),
            },
        };

        if plan.cursor_type == CursorType::LocalTime && !is_utc(&spec.time_zone) {
            let converted: Option<NaiveDateTime> =
                sqlx::query_scalar("SELECT CONVERT_TZ(NOW(6), '+00:00', ?)")
                    .bind(&spec.time_zone)
                    .fetch_one(&pool)
                    .await
                    .map_err(|err| Error::database("cannot check --time-zone", err))?;
            if converted.is_none() {
                return Err(Error::invalid(format!(
                    "time zone {:?} is not known to the server",
                    spec.time_zone
                ))
                .with_hint("pass --time-zone as an offset such as +02:00, or load the server's time zone tables"));
            }
        }

        let unsigned = catalog[plan.cursor].column_type.contains("unsigned");
        Ok(MySqlSource {
            ids: InnoDbIds::new(&pool, &keyset, &plan.table, unsigned),
            pool,
            plan: Arc::new(plan),
            keyset: Arc::new(keyset),
            columns: Arc::new(columns),
            ahead: ReadAhead::default(),
            time_zone: spec.time_zone.clone(),
            sees_all_transactions: true,
        })
    }
}

impl Source for MySqlSource {
    async fn null_cursor_count(&mut self) -> Result<u64> {
        query::count_null_cursors(&self.plan, &self.keyset, &self.pool).await
    }

    async fn clock(&mut self, settle: Duration) -> Result<Clock> {
        // A new pass reads from a new snapshot.
        self.ahead.stop();
        if !self.plan.cursor_type.is_time() {
            return self.ids.id_clock(settle).await;
        }
        // A statement takes its NOW() before InnoDB lists its transaction, so a horizon of
        // "now" could pass a row that is about to commit: never settle for less than this.
        let settle_micros = settle.max(MIN_SETTLE).as_micros() as i64;
        let mut oldest = None;
        if self.sees_all_transactions {
            let result: Result<Option<(NaiveDateTime, u64)>, _> = sqlx::query_as(
                "SELECT trx_started, trx_mysql_thread_id FROM information_schema.innodb_trx \
                 WHERE trx_mysql_thread_id <> CONNECTION_ID() ORDER BY trx_started LIMIT 1",
            )
            .fetch_optional(&self.pool)
            .await;
            match result {
                Ok(started) => oldest = started.map(super::OldestOpen::thread),
                Err(sqlx::Error::Database(err)) if is_access_denied(err.code().as_deref()) => {
                    self.sees_all_transactions = false;
                    tracing::warn!(
                        "user cannot read information_schema.innodb_trx (needs PROCESS): the \
                         horizon relies on --settle alone for late commits"
                    );
                }
                Err(err) => return Err(Error::database("cannot list open transactions", err)),
            }
        }
        let row = sqlx::query("SELECT NOW(6) - INTERVAL ? MICROSECOND, NOW(6)")
            .bind(settle_micros)
            .fetch_one(&self.pool)
            .await
            .map_err(|err| Error::database("cannot read the database clock", err))?;
        let settled: NaiveDateTime = row.get(0);
        let now: NaiveDateTime = row.get(1);
        let (horizon, held_back) = super::held_back_horizon(settled, oldest, now);
        let (horizon, now) = if self.plan.cursor_type == CursorType::LocalTime
            && !is_utc(&self.time_zone)
        {
            let row = sqlx::query("SELECT CONVERT_TZ(?, '+00:00', ?), CONVERT_TZ(?, '+00:00', ?)")
                .bind(horizon)
                .bind(&self.time_zone)
                .bind(now)
                .bind(&self.time_zone)
                .fetch_one(&self.pool)
                .await
                .map_err(|err| Error::database("cannot convert the horizon to --time-zone", err))?;
            (
                row.get::<NaiveDateTime, _>(0),
                row.get::<NaiveDateTime, _>(1),
            )
        } else {
            (horizon, now)
        };
        Ok(Clock {
            horizon: Some(json::timestamp_text(&horizon, false)),
            now: Some(json::timestamp_text(&now, false)),
            held_back,
        })
    }

    async fn count(&mut self, after: &Position, until: Until<'_>) -> Result<u64> {
        let statement = self.keyset.count(after, until);
        query::count(query::bind_text(&statement), &self.pool, "pending rows").await
    }

    async fn estimate(&mut self, after: &Position, until: Until<'_>) -> Result<u64> {
        // The optimizer's estimate of the rows its range reads (counting them would read them
        // all before the first page); the exact count when the server gives none.
        let statement = self.keyset.filtered("EXPLAIN SELECT 1", after, until);
        let estimated = query::bind_text(&statement)
            .fetch_all(&self.pool)
            .await
            .ok()
            .and_then(|rows| {
                rows.iter()
                    .map(|row| match row.try_get::<Option<String>, _>("rows") {
                        // Text on MariaDB, BIGINT UNSIGNED on MySQL.
                        Ok(rows) => rows.and_then(|rows| rows.parse().ok()),
                        Err(_) => row.try_get::<Option<u64>, _>("rows").ok().flatten(),
                    })
                    .sum::<Option<u64>>()
            });
        match estimated {
            Some(rows) => Ok(rows),
            None => self.count(after, until).await,
        }
    }

    async fn read(&mut self, after: &Position, until: Until<'_>, limit: usize) -> Result<Page> {
        let reads = MyReads {
            pool: self.pool.clone(),
            plan: Arc::clone(&self.plan),
            keyset: Arc::clone(&self.keyset),
            columns: Arc::clone(&self.columns),
            bound: Bound::of(until),
        };
        self.ahead.read(after, until, limit, reads).await
    }

    fn lag_seconds(&self, now: &str, cursor: &str) -> Option<f64> {
        super::timestamp_lag(self.plan.cursor_type.is_time(), now, cursor)
    }

    fn key_column(&self) -> &str {
        &self.plan.key_column
    }
}

fn select_for(column: &CatalogColumn, ident: &str) -> (String, Render) {
    let unsigned = column.column_type.contains("unsigned");
    let plain = |render| (ident.to_owned(), render);
    match column.data_type.as_str() {
        _ if is_integer(column) => plain(if unsigned { Render::U64 } else { Render::I64 }),
        "year" => (format!("CAST({ident} AS SIGNED)"), Render::I64),
        "bit" => (format!("CAST({ident} AS UNSIGNED)"), Render::U64),
        "float" => plain(Render::F32),
        "double" | "real" => plain(Render::F64),
        "decimal" | "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext"
        | "enum" | "set" => plain(Render::Str),
        "json" => plain(Render::Raw),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            plain(Render::Bytes)
        }
        "timestamp" => plain(Render::TimestampTz),
        "datetime" => plain(Render::Timestamp),
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" => (format!("ST_AsText({ident})"), Render::Str),
        // DATE, TIME and anything newer: the server's own text form.
        _ => (format!("CAST({ident} AS CHAR)"), Render::Str),
    }
}

/// How a placeholder for a cursor or key value is compared with `column`.
fn param_for(column: &CatalogColumn) -> String {
    // Without a cast MySQL compares an integer column with a string as doubles, which loses
    // precision past 2^53. A string compared with a temporal or text column is read as that
    // column's type, which keeps the comparison exact and the index usable.
    if !is_integer(column) {
        "{}".to_owned()
    } else if column.column_type.contains("unsigned") {
        "CAST({} AS UNSIGNED)".to_owned()
    } else {
        "CAST({} AS SIGNED)".to_owned()
    }
}

fn is_utc(zone: &str) -> bool {
    matches!(zone, "UTC" | "utc" | "+00:00" | "Z" | "Etc/UTC")
}
