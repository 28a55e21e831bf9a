//! End-to-end tests of the `host` binary against real databases.
//!
//! Every test runs the built binary in a temp directory of its own, against a schema
//! (PostgreSQL), database (MariaDB) or file (SQLite) of its own, so tests run in parallel.
//! Server URLs come from `TIDEMARK_TEST_POSTGRES_URL` and `TIDEMARK_TEST_MYSQL_URL`; an
//! unreachable server skips its tests, except under `CI=true`, where it fails them.
//!
//! - [`sync_scenarios`]: the delivery guarantees, written once and run on all three databases.
//! - [`integer_cursors`]: `--cursor id` while inserts commit out of id order (issue 16).
//! - [`mariadb_time_zones`]: TIMESTAMP and DATETIME written from sessions in other zones.
//! - [`cli`]: exit codes, error messages, `status` and `reset`.
//! - [`contract`]: contract 0.2 (transform rejections, retry-later and fatal, declared keys
//!   and `init`) and the 0.1 fixture.
//! - [`modules`]: WebAssembly modules in the pipeline: chains, config and secrets,
//!   failing guests, the compile cache, `check` and `test`.
//! - [`destinations`]: the webhook and Mailchimp destinations against a fake receiver:
//!   the allow-list, timeouts, retries, dead letters, crashes.
//! - [`tenants`]: many pipelines in one process (`host run --config tidemark.toml`): the
//!   file, fault isolation, per-tenant secrets and hosts, accounting and metrics, reload, stop.
//! - [`workers`]: several worker processes share a file's pipelines through a PostgreSQL
//!   state store: balance, kill -9, SIGSTOP and fencing, joining, SIGTERM, shared pools.

mod authoring;
mod cli;
mod contract;
mod destinations;
mod hostile_data;
mod hostile_fair;
mod hostile_hostmem;
mod hostile_poison;
mod hostile_wall;
mod integer_cursors;
mod mariadb_time_zones;
mod modules;
mod polyglot;
mod polyglot_contract;
mod support;
mod sync_scenarios;
mod templates;
mod tenants;
mod workers;
