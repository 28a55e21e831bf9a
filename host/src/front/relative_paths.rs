//! Paths written in a file, read from the file's folder (as Cargo, Docker Compose and most
//! tools read them), so that `host run --config conf/tidemark.toml` means the same from any
//! working directory. Absolute paths, and every path of a file in the working directory,
//! stay as written.

use std::path::Path;

/// `path` as seen from the folder `base` of the file it was written in.
pub fn from_folder(base: &Path, path: &str) -> String {
    if base.as_os_str().is_empty() || path.is_empty() || Path::new(path).is_absolute() {
        return path.to_owned();
    }
    base.join(path).display().to_string()
}

/// A URL whose `sqlite://PATH[?params]` path is read from `base`; any other URL (and an
/// in-memory SQLite database) as written.
pub fn sqlite_url_from_folder(base: &Path, url: &str) -> String {
    let Some(rest) = url.strip_prefix("sqlite://") else {
        return url.to_owned();
    };
    let (path, params) = rest.split_at(rest.find('?').unwrap_or(rest.len()));
    if path.starts_with(':') {
        return url.to_owned();
    }
    format!("sqlite://{}{params}", from_folder(base, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_and_sqlite_urls_are_read_from_the_folder() {
        let base = Path::new("conf");
        assert_eq!(from_folder(base, "m.wasm"), "conf/m.wasm");
        assert_eq!(from_folder(base, "/abs/m.wasm"), "/abs/m.wasm");
        assert_eq!(from_folder(Path::new(""), "m.wasm"), "m.wasm");
        assert_eq!(
            sqlite_url_from_folder(base, "sqlite://a.db?mode=ro"),
            "sqlite://conf/a.db?mode=ro"
        );
        assert_eq!(
            sqlite_url_from_folder(base, "sqlite:///abs/a.db"),
            "sqlite:///abs/a.db"
        );
        assert_eq!(
            sqlite_url_from_folder(base, "sqlite://:memory:"),
            "sqlite://:memory:"
        );
        assert_eq!(
            sqlite_url_from_folder(base, "postgres://u@h/db"),
            "postgres://u@h/db"
        );
    }
}
