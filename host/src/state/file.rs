//! The SQLite state file on disk: its directory, and who may read it.
//!
//! The store holds source URLs (without passwords, but with hosts and user names) and the rows
//! destinations rejected, whole. So a new store is readable by its owner only: the file is
//! created with mode 0600 before SQLite opens it, and SQLite gives its `-wal` and `-shm` files
//! the mode of the database file. A directory we create is 0700. A store that other users
//! can read is tightened when we own it, and reported when we cannot.

use std::path::Path;

use crate::model::error::{Error, Result};

/// Makes ready the file of `sqlite://PATH[?params]` (given without the scheme).
pub(super) fn prepare(path_and_params: &str) -> Result<()> {
    let path = path_and_params
        .split_once('?')
        .map_or(path_and_params, |(path, _params)| path);
    // SQLite decodes `%` escapes in the path; a name that has them is left for it to create.
    if path.is_empty() || path.contains('%') {
        return Ok(());
    }
    let file = Path::new(path);
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent).map_err(|err| {
            Error::io(
                format!("cannot create the state directory {}", parent.display()),
                err,
            )
            .with_hint("pass --state with a writable location")
        })?;
    }
    match create_private_file(file) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            for companion in ["", "-wal", "-shm"] {
                tighten(&format!("{path}{companion}"));
            }
            Ok(())
        }
        Err(err) => Err(
            Error::io(format!("cannot create the state file {path}"), err)
                .with_hint("pass --state with a writable location"),
        ),
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Creates an empty file (SQLite takes an empty file as an empty database); fails with
/// `AlreadyExists` when there is one.
fn create_private_file(file: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(file).map(drop)
}

/// Takes group and world access away from an existing store file.
#[cfg(unix)]
fn tighten(path: &str) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    let mode = metadata.permissions().mode();
    if mode & 0o077 == 0 {
        return;
    }
    let private = std::fs::Permissions::from_mode(mode & 0o700);
    match std::fs::set_permissions(path, private) {
        Ok(()) => tracing::info!(
            "the state file {path} was readable by other users (mode {:o}); it is now {:o}",
            mode & 0o777,
            mode & 0o700
        ),
        Err(err) => tracing::warn!(
            "the state file {path} is readable by other users (mode {:o}) and cannot be \
             changed: {err}; run `chmod 600 {path}` as its owner",
            mode & 0o777
        ),
    }
}

#[cfg(not(unix))]
fn tighten(_path: &str) {}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use crate::state::testing::TempDir;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn a_new_store_is_readable_by_its_owner_only() {
        let dir = TempDir::new();
        let store = dir.open().await;
        // A write, so that SQLite has made its -wal and -shm files.
        store.record_retry("nobody").await.unwrap();
        assert_eq!(mode(dir.path()), 0o700);
        for name in ["state.db", "state.db-wal", "state.db-shm"] {
            let path = dir.path().join(name);
            assert!(path.exists(), "{name}");
            assert_eq!(mode(&path), 0o600, "{name}");
        }
    }

    #[tokio::test]
    async fn an_open_store_is_tightened() {
        let dir = TempDir::new();
        drop(dir.open().await);
        let file = dir.path().join("state.db");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(dir.open().await);
        assert_eq!(mode(&file), 0o600);
    }
}
