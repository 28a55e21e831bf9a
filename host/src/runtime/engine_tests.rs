//! Tests of the engine and its compile cache.

use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tidemark-engine-{name}-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_cache_is_created_for_its_owner_alone() {
    let dir = scratch("create").join("a").join("cache");
    prepare_cache_dir(&dir).unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn a_cache_others_may_write_or_own_is_refused() {
    let dir = scratch("shared");
    for mode in [0o777, 0o775, 0o1777] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = prepare_cache_dir(&dir).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Invalid);
        let text = format!("{err:#}");
        assert!(text.contains("may be written by other users"), "{text}");
        assert!(text.contains(&dir.display().to_string()), "{text}");
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    prepare_cache_dir(&dir).unwrap();
    let meta = std::fs::metadata(&dir).unwrap();
    let err = check_cache_dir(&dir, &meta, meta.uid() + 1).unwrap_err();
    assert!(format!("{err:#}").contains("belongs to user"), "{err:#}");
}

#[test]
fn temporary_files_never_follow_a_planted_link() {
    let dir = scratch("link");
    let target = dir.join("elsewhere");
    std::fs::write(&target, b"keep").unwrap();
    let planted = dir.join("planted.partial");
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    assert!(write_new(&planted, b"compiled code").is_err());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
}

#[test]
fn only_this_users_own_files_are_loaded() {
    let dir = scratch("ours");
    let file = dir.join("k.cwasm");
    std::fs::write(&file, b"x").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(is_ours(&file));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(!is_ours(&file));
    let link = dir.join("l.cwasm");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    assert!(!is_ours(&link));
}

#[test]
fn the_key_follows_the_content_and_large_modules_are_refused() {
    let engine = Engine::default();
    assert_ne!(
        cache_key(&engine, b"\0asm a"),
        cache_key(&engine, b"\0asm b")
    );
    let dir = scratch("large");
    let module = dir.join("big.wasm");
    let file = std::fs::File::create(&module).unwrap();
    let max = CompileLimits::default().max_module_size;
    file.set_len(max + 1).unwrap();
    let err = read_module(&module, max).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("64 MiB a module may be (--max-module-size)"),
        "{text}"
    );
    assert!(read_module(&module, max + 1).is_ok());
}

/// How long reading and hashing a component of the Python guest's size takes: the price
/// of a key that proves the content. `cargo test --release -- --ignored hashing`.
#[test]
#[ignore]
fn hashing_a_python_sized_component() {
    let dir = scratch("hash");
    let module = dir.join("big.wasm");
    let bytes: Vec<u8> = (0..18 << 20).map(|_| fastrand::u8(..)).collect();
    std::fs::write(&module, &bytes).unwrap();
    let engine = Engine::default();
    for _ in 0..3 {
        let started = Instant::now();
        let wasm = read_module(&module, 64 << 20).unwrap();
        let read = started.elapsed();
        let key = cache_key(&engine, &wasm);
        eprintln!(
            "read 18 MiB in {read:?}, hashed in {:?} ({key})",
            started.elapsed() - read
        );
    }
}
