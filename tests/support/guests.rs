//! The modules under test as built components: the examples and the guests of
//! `tests/guests/`, which `scripts/build-guests` compiles to
//! `<target>/wasm32-wasip2/release/<name>.wasm`, `<target>` being the target directory of the
//! `host` binary under test.
//!
//! The tests do not build the guests themselves (a nested cargo would wait on the lock of the
//! build that runs them); a missing or stale component fails the test with the command that
//! builds it, so that no test runs against an old guest.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
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

/// The components that implement the `destination` world: a chain that ends in one writes no
/// JSON Lines, so `host run` refuses `--output` with it.
const DESTINATIONS: &[&str] = &[
    "webhook",
    "mailchimp",
    "py_webhook",
    "js_webhook",
    "guest_denied_destination",
    "guest_concurrent_requests",
    "guest_reject_flood",
    "guest_hold_resources",
    "guest_hostile_http",
];

/// Whether `text` (a path, or a pipelines file's keys) names a destination component.
pub fn names_a_destination(text: &str) -> bool {
    DESTINATIONS
        .iter()
        .any(|name| text.contains(&format!("{}{name}.wasm", std::path::MAIN_SEPARATOR)))
}

/// `…/target`, from the host binary's `…/target/debug/host`.
pub fn target_dir() -> PathBuf {
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

/// The source directories a guest is built from: for a Rust crate, its `src` (when the crate
/// can be told from the name), and the guest SDK and the WIT contract if it uses the SDK; for
/// an example in another language (a directory without `Cargo.toml`, built by
/// `scripts/build-polyglot`), the whole directory (its code and pinned tool versions) and the
/// WIT contract.
fn sources_of(name: &str) -> Vec<PathBuf> {
    let repo = repo_dir();
    let crate_dir = name.replace('_', "-");
    let own = match crate_dir.strip_prefix("guest-") {
        Some(rest) => repo.join("tests").join("guests").join(rest),
        None => repo.join("examples").join(&crate_dir),
    };
    let mut sources = match fs::read_to_string(own.join("Cargo.toml")) {
        Ok(manifest) if manifest.contains("tidemark-sdk") => vec![
            own.join("src"),
            repo.join("guest-sdk").join("src"),
            repo.join("wit"),
        ],
        Ok(_) => vec![own.join("src")],
        Err(_) => vec![own, repo.join("wit")],
    };
    sources.retain(|dir| dir.is_dir());
    sources
}

/// Directories that hold installed tools or caches, not sources: `npm ci` and Python write
/// them after (or while) a component is built.
const NOT_SOURCES: &[&str] = &["node_modules", "__pycache__"];

/// Whether any file under `dir` was modified after `time`.
fn newer_than(dir: &Path, time: SystemTime) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            let skipped = NOT_SOURCES.iter().any(|name| entry.file_name() == **name);
            return !skipped && newer_than(&path, time);
        }
        // Neither documentation nor a component built there by hand is a source.
        let not_source = path
            .extension()
            .is_some_and(|ext| ext == "md" || ext == "wasm");
        !not_source
            && entry
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

/// The compile cache that tests loading the big components (JavaScript and Python, 12–18 MB,
/// ~11 s to compile) share: `<target>/tidemark-test-cache`, so that each component compiles
/// once per build of it, not once per test. Sharing is safe: entries are keyed by the
/// component's content and the engine's settings, and written atomically.
pub fn shared_cache_dir() -> PathBuf {
    target_dir().join("tidemark-test-cache")
}

/// Components already in the shared cache in this test process.
static WARMED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Compiles component `name` into [`shared_cache_dir`] with `host check`, once per test
/// process: tests that start together then wait for one compilation instead of each running
/// their own on the same two cores. Returns the component's path.
pub async fn warmed(name: &str) -> PathBuf {
    let path = guest(name);
    warm(&path).await;
    path
}

/// Compiles the component at `module` into [`shared_cache_dir`], once per test process and
/// one component at a time, with no deadline: a component built by a test (a `host new`
/// project) then loads from the cache in the test's own runs, whose time is bounded.
pub async fn warm(module: &Path) {
    let module = module.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let key = module.display().to_string();
        // Held while compiling: a second test waits here, then finds the component warmed.
        let mut warmed = WARMED.lock().unwrap_or_else(|poison| poison.into_inner());
        if warmed.contains(&key) {
            return;
        }
        let cache = shared_cache_dir();
        let output = Command::new(HOST)
            .args(["check", "--module"])
            .arg(&module)
            .arg("--cache-dir")
            .arg(&cache)
            .env_remove("TIDEMARK_CACHE_DIR")
            .output()
            .unwrap_or_else(|err| panic!("running {HOST} check: {err}"));
        assert!(
            output.status.success(),
            "host check --module {} --cache-dir {} failed ({}):\n{}{}",
            module.display(),
            cache.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        warmed.insert(key);
    })
    .await
    .unwrap_or_else(|err| panic!("warming the compile cache: {err}"));
}
