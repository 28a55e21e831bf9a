//! The databases under test, one dialect each: how to reach them, how to isolate a test, and
//! how to spell a table, a literal and "now" in each.
//!
//! PostgreSQL gets a fresh schema per test and MariaDB a fresh database, both named
//! `t_<uuid>` and dropped when the test ends; SQLite gets a file in a fresh directory. A
//! server that cannot be reached skips the test, except under `CI=true` where it fails it.
//!
//! Statements are sent as plain SQL text with literals (`sqlx::raw_sql`): every value comes
//! from the test itself, and the text protocol takes DDL and `SET` on every server alike.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection, Row};

use super::temp::TempDir;

pub const POSTGRES_URL_VAR: &str = "TIDEMARK_TEST_POSTGRES_URL";
pub const MYSQL_URL_VAR: &str = "TIDEMARK_TEST_MYSQL_URL";
const POSTGRES_DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const MYSQL_DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    MariaDb,
    Sqlite,
}

/// A column type of the test tables, spelled per dialect by [`Backend::column_sql`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    /// Integer primary key.
    Key,
    /// Integer, NOT NULL, no key.
    Int,
    Text,
    /// Absolute time with microseconds, NOT NULL: PG `timestamptz`, MariaDB `TIMESTAMP(6)`,
    /// SQLite text `YYYY-MM-DD HH:MM:SS.ffffff`.
    Stamp,
    /// The same, nullable.
    NullableStamp,
    /// Wall-clock time without a zone, NOT NULL: PG `timestamp`, MariaDB `DATETIME(6)`.
    Datetime,
}

/// A value written into a test table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Int(i64),
    Text(String),
    /// A fixed time: UTC for absolute columns (on MariaDB, in the session's `time_zone`).
    Ts(NaiveDateTime),
    /// The database's clock. SQLite's clock has only milliseconds, and a writer stamping
    /// many rows per millisecond would tie them by accident, so there it is the test's
    /// clock (the same machine) with microseconds.
    Now,
    Null,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::MariaDb => "mariadb",
            Backend::Sqlite => "sqlite",
        }
    }

    pub fn column_sql(self, col: Col) -> &'static str {
        match (self, col) {
            (Backend::Postgres, Col::Key) => "BIGINT PRIMARY KEY",
            (Backend::Postgres, Col::Int) => "BIGINT NOT NULL",
            (Backend::Postgres, Col::Text) => "TEXT",
            (Backend::Postgres, Col::Stamp) => "TIMESTAMPTZ(6) NOT NULL",
            (Backend::Postgres, Col::NullableStamp) => "TIMESTAMPTZ(6) NULL",
            (Backend::Postgres, Col::Datetime) => "TIMESTAMP(6) NOT NULL",
            (Backend::MariaDb, Col::Key) => "BIGINT PRIMARY KEY",
            (Backend::MariaDb, Col::Int) => "BIGINT NOT NULL",
            (Backend::MariaDb, Col::Text) => "VARCHAR(255)",
            // An explicit default keeps MariaDB from adding ON UPDATE CURRENT_TIMESTAMP to
            // the first TIMESTAMP column: the tests stamp every write themselves.
            (Backend::MariaDb, Col::Stamp) => "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
            (Backend::MariaDb, Col::NullableStamp) => "TIMESTAMP(6) NULL DEFAULT NULL",
            (Backend::MariaDb, Col::Datetime) => "DATETIME(6) NOT NULL",
            (Backend::Sqlite, Col::Key) => "INTEGER PRIMARY KEY",
            (Backend::Sqlite, Col::Int) => "INTEGER NOT NULL",
            (Backend::Sqlite, Col::Text) => "TEXT",
            (Backend::Sqlite, Col::Stamp | Col::Datetime) => "TEXT NOT NULL",
            (Backend::Sqlite, Col::NullableStamp) => "TEXT NULL",
        }
    }

    /// The SQL literal for `val`.
    pub fn lit(self, val: &Val) -> String {
        match val {
            Val::Int(n) => n.to_string(),
            Val::Text(text) => format!("'{}'", text.replace('\'', "''")),
            Val::Ts(ts) => match self {
                Backend::Postgres => format!("'{}+00'", ts.format("%Y-%m-%d %H:%M:%S%.6f")),
                Backend::MariaDb | Backend::Sqlite => {
                    format!("'{}'", ts.format("%Y-%m-%d %H:%M:%S%.6f"))
                }
            },
            Val::Now => match self {
                Backend::Postgres => "now()".to_owned(),
                Backend::MariaDb => "NOW(6)".to_owned(),
                Backend::Sqlite => format!(
                    "'{}'",
                    chrono::Utc::now()
                        .naive_utc()
                        .format("%Y-%m-%d %H:%M:%S%.6f")
                ),
            },
            Val::Null => "NULL".to_owned(),
        }
    }

    /// How the host must render a [`Col::Stamp`] value: RFC 3339 with six digits and `Z` on
    /// the servers, the stored text as is on SQLite.
    pub fn rendered_stamp(self, ts: NaiveDateTime) -> String {
        match self {
            Backend::Postgres | Backend::MariaDb => ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            Backend::Sqlite => ts.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        }
    }
}

/// One test's database: its own schema (PostgreSQL), database (MariaDB) or file (SQLite).
pub struct TestDb {
    backend: Backend,
    pool: AnyPool,
    /// What the host gets as `--source` (and what extra sessions connect to).
    url: String,
    /// The schema or database created for this test; `None` on SQLite.
    namespace: Option<String>,
    _dir: Option<TempDir>,
}

impl TestDb {
    /// A fresh, empty namespace on `backend`, or `None` (after printing why) when the server
    /// is unreachable outside CI.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        sqlx::any::install_default_drivers();
        let namespace = format!("t_{}", uuid::Uuid::new_v4().simple());
        let (url, pool_url, dir) = match backend {
            Backend::Postgres => {
                let url = env_url(POSTGRES_URL_VAR, POSTGRES_DEFAULT_URL);
                (url.clone(), url, None)
            }
            Backend::MariaDb => {
                let url = env_url(MYSQL_URL_VAR, MYSQL_DEFAULT_URL);
                (url.clone(), url, None)
            }
            Backend::Sqlite => {
                let dir = TempDir::new();
                let url = format!("sqlite://{}", dir.path().join("app.db").display());
                let pool_url = format!("{url}?mode=rwc");
                (url, pool_url, Some(dir))
            }
        };
        if let Err(err) = check_reachable(backend, &pool_url).await {
            unreachable_server(backend, &url, &err);
            return None;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&pool_url)
            .await
            .unwrap_or_else(|err| panic!("{}: connecting to {url}: {err}", backend.name()));
        let db = TestDb {
            backend,
            pool,
            url,
            namespace: (backend != Backend::Sqlite).then_some(namespace),
            _dir: dir,
        };
        match (backend, &db.namespace) {
            (Backend::Postgres, Some(ns)) => db.execute(&format!("CREATE SCHEMA {ns}")).await,
            (Backend::MariaDb, Some(ns)) => db.execute(&format!("CREATE DATABASE {ns}")).await,
            // WAL, as applications that write while others read set it: the host's reads
            // then never hold up the test's writers.
            _ => db.execute("PRAGMA journal_mode = WAL").await,
        }
        Some(db)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `name` qualified with this test's schema or database, as `--table` takes it.
    pub fn table(&self, name: &str) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}.{name}"),
            None => name.to_owned(),
        }
    }

    pub fn lit(&self, val: &Val) -> String {
        self.backend.lit(val)
    }

    pub fn rendered_stamp(&self, ts: NaiveDateTime) -> String {
        self.backend.rendered_stamp(ts)
    }

    pub async fn execute(&self, sql: &str) {
        if let Err(err) = sqlx::raw_sql(sql).execute(&self.pool).await {
            panic!("{}: {sql}: {err}", self.backend.name());
        }
    }

    /// Creates `name` with `columns` and returns its qualified name.
    pub async fn create_table(&self, name: &str, columns: &[(&str, Col)]) -> String {
        let table = self.table(name);
        let columns = columns
            .iter()
            .map(|(column, col)| format!("{column} {}", self.backend.column_sql(*col)))
            .collect::<Vec<_>>()
            .join(", ");
        self.execute(&format!("CREATE TABLE {table} ({columns})"))
            .await;
        table
    }

    /// The common shape: `users(id key, email, name, updated_at NOT NULL)`.
    pub async fn create_users(&self) -> String {
        self.create_table("users", USERS).await
    }

    /// Inserts `rows` (values in `columns` order), a few hundred rows per statement.
    pub async fn insert(&self, table: &str, columns: &[&str], rows: &[Vec<Val>]) {
        for sql in insert_statements(self.backend, table, columns, rows) {
            self.execute(&sql).await;
        }
    }

    /// Inserts users `id` with the standard email and name and the given `updated_at`.
    pub async fn insert_users(&self, table: &str, rows: impl IntoIterator<Item = (i64, Val)>) {
        let rows: Vec<Vec<Val>> = rows
            .into_iter()
            .map(|(id, stamp)| user_values(id, stamp))
            .collect();
        self.insert(table, USERS_COLUMNS, &rows).await;
    }

    /// A connection of its own, for a session setting or a transaction held open.
    pub async fn session(&self) -> AnyConnection {
        let url = match self.backend {
            Backend::Sqlite => format!("{}?mode=rw", self.url),
            _ => self.url.clone(),
        };
        AnyConnection::connect(&url)
            .await
            .unwrap_or_else(|err| panic!("{}: connecting a session: {err}", self.backend.name()))
    }

    /// `id -> name` for every row of `table`.
    pub async fn names(&self, table: &str) -> BTreeMap<i64, String> {
        let sql = format!("SELECT id, name FROM {table}");
        let rows = sqlx::raw_sql(&sql)
            .fetch_all(&self.pool)
            .await
            .unwrap_or_else(|err| panic!("{}: {sql}: {err}", self.backend.name()));
        rows.iter()
            .map(|row| {
                let id: i64 = row.try_get(0).expect("id as i64");
                let name: String = row.try_get(1).expect("name as text");
                (id, name)
            })
            .collect()
    }

    /// Whether MariaDB has its time zone tables loaded (named zones work).
    pub async fn has_named_time_zones(&self) -> bool {
        let sql = "SELECT COUNT(*) FROM mysql.time_zone_name";
        match sqlx::raw_sql(sql).fetch_one(&self.pool).await {
            Ok(row) => row.try_get::<i64, _>(0).unwrap_or(0) > 0,
            Err(_) => false,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(ns) = self.namespace.take() else {
            return;
        };
        let (backend, url) = (self.backend, self.url.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread with a
        // runtime of its own drops the namespace, best effort, with a bound on lock waits.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(mut conn) = AnyConnection::connect(&url).await else {
                    return;
                };
                let sql = match backend {
                    Backend::Postgres => {
                        format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {ns} CASCADE")
                    }
                    _ => {
                        format!("SET SESSION lock_wait_timeout = 10; DROP DATABASE IF EXISTS {ns}")
                    }
                };
                let _ = sqlx::raw_sql(&sql).execute(&mut conn).await;
                let _ = conn.close().await;
            });
        });
        let _ = cleanup.join();
    }
}

pub const USERS: &[(&str, Col)] = &[
    ("id", Col::Key),
    ("email", Col::Text),
    ("name", Col::Text),
    ("updated_at", Col::Stamp),
];

pub const USERS_COLUMNS: &[&str] = &["id", "email", "name", "updated_at"];

/// The standard values of user `id`.
pub fn user_values(id: i64, stamp: Val) -> Vec<Val> {
    vec![
        Val::Int(id),
        Val::Text(format!("user{id}@example.com")),
        Val::Text(format!("user {id}")),
        stamp,
    ]
}

pub fn insert_statements(
    backend: Backend,
    table: &str,
    columns: &[&str],
    rows: &[Vec<Val>],
) -> Vec<String> {
    rows.chunks(400)
        .map(|chunk| {
            let values = chunk
                .iter()
                .map(|row| {
                    let row = row
                        .iter()
                        .map(|val| backend.lit(val))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("({row})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "INSERT INTO {table} ({}) VALUES {values}",
                columns.join(", ")
            )
        })
        .collect()
}

fn env_url(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Why each server was found unreachable, so that only the first test of a run waits for
/// the connection to fail.
static UNREACHABLE: Mutex<BTreeMap<&'static str, String>> = Mutex::new(BTreeMap::new());

/// One connection attempt, at most 5 s; a failure is remembered for the rest of the run.
async fn check_reachable(backend: Backend, url: &str) -> Result<(), String> {
    if let Some(err) = UNREACHABLE
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .get(backend.name())
    {
        return Err(err.clone());
    }
    let attempt = tokio::time::timeout(Duration::from_secs(5), AnyConnection::connect(url)).await;
    let err = match attempt {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            return Ok(());
        }
        Ok(Err(err)) => err.to_string(),
        Err(_) => "no answer within 5 s".to_owned(),
    };
    UNREACHABLE
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .insert(backend.name(), err.clone());
    Err(err)
}

fn unreachable_server(backend: Backend, url: &str, err: &str) {
    let var = match backend {
        Backend::Postgres => POSTGRES_URL_VAR,
        Backend::MariaDb => MYSQL_URL_VAR,
        // A file in our own directory: failing to open it is a failure, never a skip.
        Backend::Sqlite => panic!("sqlite: opening {url}: {err}"),
    };
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!(
            "{} unreachable at {url}: {err}\nCI=true needs every database: start it, or set {var}",
            backend.name()
        );
    }
    eprintln!(
        "skipping: {} unreachable ({url}: {err}); set {var} to test against it",
        backend.name()
    );
}
