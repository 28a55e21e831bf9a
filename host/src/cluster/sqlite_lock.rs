//! One worker per SQLite state store: SQLite has no server to hold leases against, so the
//! only worker of a state file holds a lock on a file beside it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;

use crate::model::error::{Error, Result};

/// Holds the only worker's place on an SQLite state store (`sqlite://PATH`), by a lock on
/// `PATH.worker-lock`, released when the process ends however it ends. `None` for other
/// stores. A second worker on the same file is refused with a message saying why.
pub fn lock_sqlite(state_url: &str) -> Result<Option<File>> {
    let Some(path) = state_url.strip_prefix("sqlite://") else {
        return Ok(None);
    };
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    let lock_path = format!("{path}.worker-lock");
    // Owner-only, like the state store beside it.
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|err| {
            Error::io(format!("cannot create the worker lock {lock_path}"), err)
                .with_hint("pass --state with a writable location")
        })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::invalid(format!(
            "another host already runs the pipelines of the SQLite state store {path}: \
             SQLite cannot hold leases, so one worker runs per state file"
        ))
        .with_hint(
            "stop the other host first; to share pipelines among several workers, use a \
             PostgreSQL state store (state = \"postgres://…\", or --state postgres://…)",
        )),
        Err(std::fs::TryLockError::Error(err)) => Err(Error::io(
            format!("cannot lock the worker lock {lock_path}"),
            err,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::error::ErrorKind;
    use crate::state::testing::TempDir;

    #[test]
    fn a_second_worker_on_an_sqlite_store_is_refused() {
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.path()).unwrap();
        let url = dir.url();
        let held = lock_sqlite(&url).unwrap();
        assert!(held.is_some());
        let err = lock_sqlite(&url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert!(err.to_string().contains("one worker runs"), "{err}");
        assert!(err.hint().unwrap().contains("PostgreSQL"));
        drop(held);
        assert!(lock_sqlite(&url).unwrap().is_some());
        assert!(lock_sqlite("postgres://db/state").unwrap().is_none());
    }
}
