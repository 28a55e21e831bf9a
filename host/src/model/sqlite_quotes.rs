//! Every SQLite connection of the process refuses double-quoted string literals.
//!
//! SQLite takes a double-quoted identifier that names no column for a string literal (the
//! "DQS" misfeature, <https://sqlite.org/quirks.html#dblquote>). The host quotes each column
//! it reads (`"score"`), so a column dropped or renamed while `host run` polls would come back
//! as its own name, in every row, silently (issue 24). With DQS off, SQLite says "no such
//! column: score" instead.
//!
//! The setting is per connection, and the host's connections are opened by sqlx (the source
//! pools, and the state store's `Any` pool, which does not show its handle) and by rusqlite
//! (the page reader, `host new`), over the one libsqlite3 of the process. So it is made in one
//! place: an automatic extension, which SQLite runs on every connection it opens from then
//! on, whoever opens it. Each opener calls [`refuse_double_quoted_strings`] first.

use std::os::raw::{c_char, c_int};
use std::sync::OnceLock;

use rusqlite::auto_extension::{init_auto_extension, register_auto_extension};
use rusqlite::config::DbConfig;
use rusqlite::ffi;

use crate::model::error::{Error, Result};

/// Makes every SQLite connection opened from now on refuse double-quoted string literals, in
/// statements (DML) and in schema definitions (DDL). A connection that cannot be set so fails
/// to open. Only the first call does anything.
pub fn refuse_double_quoted_strings() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: `on_open` neither opens nor closes a database, nor changes the list of
            // automatic extensions: the conditions of `register_auto_extension`.
            unsafe { register_auto_extension(on_open) }.map_err(|err| err.to_string())
        })
        .clone()
        .map_err(|err| Error::fatal(format!("cannot set up SQLite connections: {err}")))
}

/// The automatic extension: SQLite calls it with each connection it opens.
unsafe extern "C" fn on_open(
    db: *mut ffi::sqlite3,
    message: *mut *mut c_char,
    _: *const ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: SQLite passes the connection it is opening, which stays open through the call,
    // and the place for an error message; `strict` only changes the connection's settings.
    unsafe { init_auto_extension(db, message, strict) }
}

fn strict(connection: rusqlite::Connection) -> rusqlite::Result<()> {
    for setting in [
        DbConfig::SQLITE_DBCONFIG_DQS_DML,
        DbConfig::SQLITE_DBCONFIG_DQS_DDL,
    ] {
        connection.set_db_config(setting, false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_opened_after_it_refuses_double_quoted_strings() {
        refuse_double_quoted_strings().unwrap();
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        connection.execute_batch("CREATE TABLE t (a)").unwrap();
        let err = connection
            .prepare("SELECT \"no_such_column\" FROM t")
            .expect_err("a double-quoted name that is no column must not be a string");
        assert!(err.to_string().contains("no such column"), "{err}");
        let err = connection
            .execute_batch("CREATE TABLE u (a CHECK (a <> \"x\"))")
            .expect_err("nor in a schema definition");
        assert!(err.to_string().contains("no such column"), "{err}");
    }
}
