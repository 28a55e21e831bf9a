//! PostgreSQL source.
//!
//! Sessions are pinned to `TimeZone=UTC` so that no value is shifted by a server or role
//! default. The safe horizon of a time cursor takes the oldest open transaction from
//! `pg_stat_activity`, which needs superuser or `pg_read_all_stats` to show other roles'
//! sessions. An integer cursor's horizon waits for the transactions holding write locks on
//! the table or its sequence (see `ids::postgres`).

pub(crate) mod horizon;
pub(crate) mod keys;
pub(crate) mod pages;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool};
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
use crate::source::postgres::horizon::PgIds;
use crate::source::postgres::pages::{Column, CopyReads, Render};

pub struct PgSource {
    pub(super) pool: PgPool,
    pub(super) plan: Arc<Plan>,
    pub(super) keyset: Keyset,
    /// The same keyset with its values written in, for pages read through COPY.
    copy_keyset: Arc<Keyset>,
    pub(super) columns: Arc<Vec<Column>>,
    ahead: ReadAhead,
    time_zone: String,
    sees_all_transactions: bool,
    /// The horizon of an integer cursor.
    ids: PgIds,
}

/// A column as `pg_attribute` and `pg_type` describe it.
struct CatalogColumn {
    name: String,
    type_name: String,
    formatted_type: String,
    not_null: bool,
    type_kind: String,
    category: String,
}

const DIALECT: Dialect = Dialect {
    missing_table_hint: "check --table; names are case-sensitive, qualify them as SCHEMA.TABLE \
                         outside the search path",
    cursor_hint: "pass --cursor with a timestamp column that is set on every change, or an \
                  integer that only grows",
    key_type_hint: "pass --key with an integer, uuid or text column",
    refuses_nullable_keys: true,
};

/// Reads the table's columns, primary key and indexes from the catalog; `None` when there
/// is no such table.
async fn describe(
    pool: &PgPool,
    quoted_table: &str,
    table: &str,
) -> Result<Option<(Vec<CatalogColumn>, TableDescription)>> {
    let relation: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(quoted_table)
        .fetch_one(pool)
        .await
        .map_err(|err| Error::database(format!("cannot look up table {table:?}"), err))?;
    if relation.is_none() {
        return Ok(None);
    }
    let catalog: Vec<CatalogColumn> = sqlx::query(
        "SELECT a.attname::text, t.typname::text, format_type(a.atttypid, a.atttypmod), \
                a.attnotnull, t.typtype::text, t.typcategory::text \
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
    )
    .bind(quoted_table)
    .fetch_all(pool)
    .await
    .map_err(|err| Error::database(format!("cannot read the columns of {table:?}"), err))?
    .into_iter()
    .map(|row| CatalogColumn {
        name: row.get(0),
        type_name: row.get(1),
        formatted_type: row.get(2),
        not_null: row.get(3),
        type_kind: row.get(4),
        category: row.get(5),
    })
    .collect();
    let primary_key: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i \
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = to_regclass($1) AND i.indisprimary",
    )
    .bind(quoted_table)
    .fetch_all(pool)
    .await
    .map_err(|err| Error::database("cannot read the primary key of the table", err))?;
    // Each whole-table index: the column it starts with, and whether it keeps that column
    // unique on its own. An expression index starts with no column and is left out.
    let indexes: Vec<(String, bool)> = sqlx::query_as(
        "SELECT a.attname::text, i.indisunique AND i.indnkeyatts = 1 FROM pg_index i \
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
         WHERE i.indrelid = to_regclass($1) AND i.indpred IS NULL",
    )
    .bind(quoted_table)
    .fetch_all(pool)
    .await
    .map_err(|err| Error::database("cannot read the indexes of the table", err))?;
    let description = TableDescription {
        columns: catalog.iter().map(describe_column).collect(),
        primary_key,
        unique_columns: indexes
            .iter()
            .filter(|(_, unique)| *unique)
            .map(|(column, _)| column.clone())
            .collect(),
        index_leaders: indexes.into_iter().map(|(column, _)| column).collect(),
    };
    Ok(Some((catalog, description)))
}

/// Which types make a cursor, and which a key: those whose text form casts back exactly.
fn describe_column(column: &CatalogColumn) -> ColumnDescription {
    let type_name = column.type_name.as_str();
    ColumnDescription {
        name: column.name.clone(),
        type_name: column.type_name.clone(),
        nullable: !column.not_null,
        cursor: match type_name {
            "timestamptz" => Some(CursorType::Instant),
            "timestamp" => Some(CursorType::LocalTime),
            "int2" | "int4" | "int8" => Some(CursorType::Integer),
            _ => None,
        },
        orders_rows: matches!(
            type_name,
            "int2" | "int4" | "int8" | "uuid" | "text" | "varchar" | "bpchar"
        ),
    }
}

impl PgSource {
    pub async fn connect(url: &str, spec: &TableSpec) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|err| {
                Error::invalid(format!(
                    "invalid PostgreSQL URL {:?}: {err}",
                    crate::model::redact::redact_url(url)
                ))
                .with_hint("use postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
            })?
            .application_name("tidemark")
            // Standard strings: the COPY reads write values in as literals (see `keyset`).
            .options([
                ("TimeZone", "UTC"),
                ("DateStyle", "ISO"),
                ("standard_conforming_strings", "on"),
            ]);
        let pool: PgPool = query::open_pool(options).await.map_err(|err| {
            Error::database(
                format!(
                    "cannot connect to {}",
                    crate::model::redact::redact_url(url)
                ),
                err,
            )
            .with_hint("check that the server is up and the URL (--source) is right")
        })?;
        let quoted_table = match &spec.table.schema {
            Some(schema) => format!(
                "{}.{}",
                quote_ident(schema, '"'),
                quote_ident(&spec.table.name, '"')
            ),
            None => quote_ident(&spec.table.name, '"'),
        };
        let described = describe(&pool, &quoted_table, &spec.table.to_string()).await?;
        let plan = plan::plan(spec, described.as_ref().map(|(_, table)| table), &DIALECT)?;
        let catalog = described.map(|(catalog, _)| catalog).unwrap_or_default();

        let mut select = Vec::with_capacity(catalog.len());
        let mut columns = Vec::with_capacity(catalog.len());
        for column in &catalog {
            let ident = quote_ident(&column.name, '"');
            let render = render_for(column);
            select.push(match render {
                Render::Str if !is_text_type(&column.type_name) => format!("{ident}::text"),
                Render::Raw if matches!(column.type_name.as_str(), "json" | "jsonb") => {
                    format!("{ident}::text")
                }
                Render::Raw => format!("to_json({ident})::text"),
                _ => ident,
            });
            columns.push(Column {
                name: column.name.clone(),
                key: json::object_key(&column.name),
                render,
            });
        }

        let key_info = &catalog[plan.key];
        // Without the length, which would cut a longer value; `bpchar` compares as the
        // column does (trailing blanks ignored) where `text` would compare the trimmed column
        // with a padded value.
        let key_type = match key_info.type_name.as_str() {
            "bpchar" => "bpchar",
            "varchar" => "text",
            _ => &key_info.formatted_type,
        };
        let cursor_type = match plan.cursor_type {
            CursorType::Instant => "timestamptz",
            CursorType::LocalTime => "timestamp",
            CursorType::Integer => &catalog[plan.cursor].type_name,
        };
        let keyset = Keyset {
            style: Style::DollarRowValues,
            table: quoted_table.clone(),
            select_list: select.join(", "),
            cursor: quote_ident(&spec.cursor, '"'),
            key: quote_ident(&plan.key_column, '"'),
            cursor_param: format!("CAST({{}} AS {cursor_type})"),
            key_param: format!("CAST({{}} AS {key_type})"),
            // Integer horizons are one past the largest final id, which may be past the
            // column's own range.
            horizon_param: match plan.cursor_type {
                CursorType::Integer => "CAST({} AS int8)".to_owned(),
                _ => format!("CAST({{}} AS {cursor_type})"),
            },
        };

        let sees_all_transactions: bool =
            sqlx::query_scalar("SELECT pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')")
                .fetch_one(&pool)
                .await
                .map_err(|err| Error::database("cannot check the role's rights", err))?;
        if !sees_all_transactions && plan.cursor_type.is_time() {
            tracing::warn!(
                "role cannot see other roles' transactions (needs pg_read_all_stats): the horizon \
                 relies on --settle alone for their late commits"
            );
        }
        if plan.cursor_type == CursorType::LocalTime {
            sqlx::query("SELECT now() AT TIME ZONE $1")
                .bind(&spec.time_zone)
                .execute(&pool)
                .await
                .map_err(|err| {
                    Error::database(format!("time zone {:?} is not known", spec.time_zone), err)
                        .with_hint("pass --time-zone with a name such as Europe/Berlin or an offset such as +02:00")
                })?;
        }

        let ids = PgIds::prepare(&pool, &keyset, &quoted_table, &spec.cursor, &plan).await?;
        let copy_keyset = Keyset {
            style: Style::LiteralRowValues,
            ..keyset.clone()
        };
        Ok(PgSource {
            ids,
            pool,
            plan: Arc::new(plan),
            keyset,
            copy_keyset: Arc::new(copy_keyset),
            columns: Arc::new(columns),
            ahead: ReadAhead::default(),
            time_zone: spec.time_zone.clone(),
            sees_all_transactions,
        })
    }
}

impl Source for PgSource {
    async fn null_cursor_count(&mut self) -> Result<u64> {
        query::count_null_cursors(&self.plan, &self.keyset, &self.pool).await
    }

    async fn clock(&mut self, settle: Duration) -> Result<Clock> {
        // A new pass reads from a new snapshot.
        self.ahead.stop();
        if !self.plan.cursor_type.is_time() {
            return self.ids.id_clock(settle).await;
        }
        // statement_timestamp(), not now(): now() would be the start of a transaction that a
        // pooled connection might hold.
        let oldest_transaction = if self.sees_all_transactions {
            "(SELECT ARRAY[xact_start::text, pid::text] FROM pg_stat_activity \
               WHERE datname = current_database() AND backend_type = 'client backend' \
                 AND pid <> pg_backend_pid() AND xact_start IS NOT NULL \
               ORDER BY xact_start LIMIT 1)"
        } else {
            "NULL::text[]"
        };
        let sql = format!(
            "SELECT statement_timestamp() - make_interval(secs => $1), \
                    ({oldest_transaction})[1]::timestamptz, statement_timestamp(), \
                    ({oldest_transaction})[2]"
        );
        let row = sqlx::query(&sql)
            .bind(settle.as_secs_f64())
            .fetch_one(&self.pool)
            .await
            .map_err(|err| Error::database("cannot read the database clock", err))?;
        let settled: DateTime<Utc> = row.get(0);
        let oldest: Option<DateTime<Utc>> = row.get(1);
        let now: DateTime<Utc> = row.get(2);
        let oldest_pid: Option<String> = row.get(3);
        let (horizon, held_back) = super::held_back_horizon(
            settled.naive_utc(),
            oldest.map(|oldest| super::OldestOpen {
                started: oldest.naive_utc(),
                label: format!("pid {}", oldest_pid.unwrap_or_default()),
            }),
            now.naive_utc(),
        );
        let horizon = horizon.and_utc();
        let (horizon, now) = match self.plan.cursor_type {
            CursorType::Instant => (
                json::timestamp_text(&horizon.naive_utc(), true),
                json::timestamp_text(&now.naive_utc(), true),
            ),
            _ => {
                // Wall-clock values in the application's zone: convert inside the database,
                // which knows the zone's rules.
                let row = sqlx::query(
                    "SELECT $1::timestamptz AT TIME ZONE $3, $2::timestamptz AT TIME ZONE $3",
                )
                .bind(horizon)
                .bind(now)
                .bind(&self.time_zone)
                .fetch_one(&self.pool)
                .await
                .map_err(|err| Error::database("cannot convert the horizon to --time-zone", err))?;
                let horizon: NaiveDateTime = row.get(0);
                let now: NaiveDateTime = row.get(1);
                (
                    json::timestamp_text(&horizon, false),
                    json::timestamp_text(&now, false),
                )
            }
        };
        Ok(Clock {
            horizon: Some(horizon),
            now: Some(now),
            held_back,
        })
    }

    async fn count(&mut self, after: &Position, until: Until<'_>) -> Result<u64> {
        let statement = self.keyset.count(after, until);
        query::count(query::bind_text(&statement), &self.pool, "pending rows").await
    }

    async fn estimate(&mut self, after: &Position, until: Until<'_>) -> Result<u64> {
        // The planner's estimate, from the first line of the plan: `… (cost=… rows=N width=…)`.
        // Its values written in, so that the plan is that of these values.
        let statement = self.copy_keyset.filtered("EXPLAIN SELECT 1", after, until);
        let row = sqlx::raw_sql(&statement.sql)
            .fetch_one(&self.pool)
            .await
            .map_err(|err| Error::database("cannot estimate the pending rows", err))?;
        let plan: String = row
            .try_get(0)
            .map_err(|err| Error::database("cannot estimate the pending rows", err))?;
        Ok(planned_rows(&plan).unwrap_or(0))
    }

    async fn read(&mut self, after: &Position, until: Until<'_>, limit: usize) -> Result<Page> {
        let reads = CopyReads {
            pool: self.pool.clone(),
            plan: Arc::clone(&self.plan),
            keyset: Arc::clone(&self.copy_keyset),
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

/// The `rows=N` of a plan's first line.
fn planned_rows(plan: &str) -> Option<u64> {
    let rest = &plan[plan.find(" rows=")? + " rows=".len()..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

fn render_for(column: &CatalogColumn) -> Render {
    match column.type_name.as_str() {
        "bool" => Render::Bool,
        "int2" => Render::I16,
        "int4" => Render::I32,
        "int8" => Render::I64,
        "float4" => Render::F32,
        "float8" => Render::F64,
        "uuid" => Render::Uuid,
        "bytea" => Render::Bytes,
        "timestamptz" => Render::TimestampTz,
        "timestamp" => Render::Timestamp,
        "json" | "jsonb" => Render::Raw,
        name if is_text_type(name) => Render::Str,
        "numeric" | "date" | "time" | "timetz" | "interval" | "inet" | "cidr" | "macaddr"
        | "macaddr8" | "money" | "xml" | "bit" | "varbit" | "tsvector" | "oid" => Render::Str,
        _ if column.type_kind == "e" => Render::Str,
        // Arrays, composites, ranges, domains and anything else: PostgreSQL's own to_json.
        _ if column.category == "A" || column.type_kind != "b" => Render::Raw,
        _ => Render::Str,
    }
}

fn is_text_type(type_name: &str) -> bool {
    matches!(
        type_name,
        "text" | "varchar" | "bpchar" | "name" | "char" | "citext"
    )
}
