//! The processors under test as built components: the examples and the guests of
//! `tests/guests/`, which `scripts/build-guests` compiles to
//! `<target>/wasm32-wasip2/release/<name>.wasm`, `<target>` being the target directory of the
//! `host` binary under test.
//!
//! The tests do not build the guests themselves (a nested cargo would wait on the lock of the
//! build that runs them); a missing or stale component fails the test with the command that
//! builds it, so that no test runs against an old guest.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::host::HOST;

/// The built component `name` (file stem, e.g. `mask_pii`, `guest_panics`).
pub fn guest(name: &str) -> PathBuf {
    let path = target_dir()
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{name}.wasm"));
    let built = fs::metadata(&path)
        .and_then(|meta| meta.modified())
        .unwrap_or_else(|err| {
            panic!(
                "guest {name} is not built ({}: {err}); run `bash scripts/build-guests` first",
                path.display()
            )
        });
    if let Some(newer) = sources_of(name).iter().find(|src| newer_than(src, built)) {
        panic!(
            "guest {name} is older than {}; run `bash scripts/build-guests` again",
            newer.display()
        );
    }
    path
}

/// `…/target`, from the host binary's `…/target/debug/host`.
fn target_dir() -> PathBuf {
    Path::new(HOST)
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("no target directory above {HOST}"))
        .to_path_buf()
}

/// The repository's root, from the host crate's manifest directory.
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate sits in the repository")
        .to_path_buf()
}

/// The source directories a guest is built from: its own crate (when it can be told from the
/// name), and the guest SDK and the WIT contract if it uses the SDK.
fn sources_of(name: &str) -> Vec<PathBuf> {
    let repo = repo_dir();
    let crate_dir = name.replace('_', "-");
    let own = match crate_dir.strip_prefix("guest-") {
        Some(rest) => repo.join("tests").join("guests").join(rest),
        None => repo.join("examples").join(&crate_dir),
    };
    let uses_sdk = fs::read_to_string(own.join("Cargo.toml"))
        .is_ok_and(|manifest| manifest.contains("tidemark-sdk"));
    let mut sources = vec![own.join("src")];
    if uses_sdk {
        sources.extend([repo.join("guest-sdk").join("src"), repo.join("wit")]);
    }
    sources.retain(|dir| dir.is_dir());
    sources
}

/// Whether any file under `dir` was modified after `time`.
fn newer_than(dir: &Path, time: SystemTime) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            return newer_than(&path, time);
        }
        entry
            .metadata()
            .and_then(|meta| meta.modified())
            .is_ok_and(|modified| modified > time)
    })
}

/// The component file stem of every crate in `tests/guests/`: a library's name with `_`, a
/// command's as is.
pub fn test_guest_names() -> Vec<String> {
    let dir = repo_dir().join("tests").join("guests");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("listing {}: {err}", dir.display()))
        .flatten()
        .filter_map(|entry| fs::read_to_string(entry.path().join("Cargo.toml")).ok())
        .map(|manifest| {
            let name = manifest
                .lines()
                .find_map(|line| line.strip_prefix("name = \""))
                .and_then(|rest| rest.strip_suffix('"'))
                .unwrap_or_else(|| panic!("a guest manifest without a name:\n{manifest}"))
                .to_owned();
            if manifest.contains("[lib]") {
                name.replace('-', "_")
            } else {
                name
            }
        })
        .collect();
    names.sort();
    names
}
