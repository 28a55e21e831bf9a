//! `host new NAME --lang rust|python|js --world transform|destination`: a module project that
//! builds with one command and passes `host check` and `host test` on the sample rows it
//! includes. The templates live in `host/templates/` and are compiled into the binary, with
//! the contract (`wit/`) for the languages that build against it, so the project needs
//! nothing from this repository but (for Rust) the guest SDK.

use std::path::{Path, PathBuf};

use crate::front::cli::{Lang, NewArgs, NewWorld};
use crate::model::error::{Error, Result};
use crate::runtime::PACKAGE_VERSION;

/// The guest SDK of the tree this binary was built from; a project made on another machine
/// names its own with `--sdk`.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk");

/// `wit/` as `wit/processor.wit` and `wit/deps/*.wit`, for componentize-py and componentize-js.
const WIT: &[(&str, &str)] = &[
    (
        "wit/processor.wit",
        include_str!("../../../wit/processor.wit"),
    ),
    (
        "wit/deps/cli.wit",
        include_str!("../../../wit/deps/cli.wit"),
    ),
    (
        "wit/deps/clocks.wit",
        include_str!("../../../wit/deps/clocks.wit"),
    ),
    (
        "wit/deps/filesystem.wit",
        include_str!("../../../wit/deps/filesystem.wit"),
    ),
    (
        "wit/deps/http.wit",
        include_str!("../../../wit/deps/http.wit"),
    ),
    ("wit/deps/io.wit", include_str!("../../../wit/deps/io.wit")),
    (
        "wit/deps/random.wit",
        include_str!("../../../wit/deps/random.wit"),
    ),
    (
        "wit/deps/sockets.wit",
        include_str!("../../../wit/deps/sockets.wit"),
    ),
];

const README: &str = include_str!("../../templates/README.md");
const ROWS: &str = include_str!("../../templates/rows.json");
const EXPECTED: &str = include_str!("../../templates/expected.json");
const RUST_CARGO: &str = include_str!("../../templates/rust/Cargo.toml");
const RUST_CONFIG: &str = include_str!("../../templates/rust/cargo/config.toml");
const RUST_TRANSFORM: &str = include_str!("../../templates/rust/transform.rs");
const RUST_DESTINATION: &str = include_str!("../../templates/rust/destination.rs");
const PY_TRANSFORM: &str = include_str!("../../templates/python/transform.py");
/// The Python destination is the `py-webhook` example itself: one program, kept working by
/// its own tests.
const PY_DESTINATION: &str = include_str!("../../../examples/py-webhook/app.py");
const PY_REQUIREMENTS: &str = include_str!("../../templates/python/requirements.txt");
const PY_BUILD: &str = include_str!("../../templates/python/build.sh");
const JS_TRANSFORM: &str = include_str!("../../templates/js/transform.js");
/// The JavaScript destination is the `js-webhook` example itself, as for Python.
const JS_DESTINATION: &str = include_str!("../../../examples/js-webhook/app.js");
const JS_PACKAGE: &str = include_str!("../../templates/js/package.json");

/// Runs `host new`: writes the project into `--dir` (default: `./NAME`) and says what next.
pub fn run(args: NewArgs) -> anyhow::Result<()> {
    let project = project(&args)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    write_all(&dir, &project.files)?;
    write_sample_table(&dir.join(SAMPLE_DATABASE))?;
    println!(
        "created {} ({} {} module) in {}",
        args.name,
        language(args.lang),
        world_name(args.world),
        dir.display()
    );
    println!("next:\n  cd {}\n  {}", dir.display(), project.build);
    println!(
        "  host test --module {} --input rows.json {}",
        project.wasm, project.test_flags
    );
    println!(
        "  host run --source sqlite://{SAMPLE_DATABASE} --table users --module {} --once{}",
        project.wasm, project.run_flags
    );
    Ok(())
}

/// The SQLite database `host new` writes beside the sources, so that `host run` has a table to
/// read on the first try.
const SAMPLE_DATABASE: &str = "app.db";

/// Table `users` of the sample database: three users with the columns of `rows.json` and the
/// cursor `host run` reads by default (`updated_at`). The template's transform passes on
/// users 1 and 3 (with `email_domain`) and leaves out 2 (plan free).
const SAMPLE_TABLE: &str = "
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    email TEXT,
    plan TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- What host run reads by: changed rows in (cursor, key) order, without a table scan.
CREATE INDEX users_by_change ON users (updated_at, id);
INSERT INTO users VALUES
    (1, 'ada@example.com', 'pro', '2024-05-01 12:00:00.000001'),
    (2, 'bob@example.org', 'free', '2024-05-01 12:00:01.000000'),
    (3, 'cy@Example.NET', 'team', '2024-05-01 12:00:02.000000');
";

/// Writes the sample database, a file of its own: `app.db` in a project `host new` just made.
/// The table is made in one transaction, and a file that could not be filled (a full disk) is
/// removed: the next `host new` into the folder, or a `host run` on it, finds no half table.
fn write_sample_table(path: &Path) -> Result<()> {
    crate::model::sqlite_quotes::refuse_double_quoted_strings()?;
    let fill = || -> rusqlite::Result<()> {
        let mut connection = rusqlite::Connection::open(path)?;
        let transaction = connection.transaction()?;
        transaction.execute_batch(SAMPLE_TABLE)?;
        transaction.commit()
    };
    fill().map_err(|err| {
        let _ = std::fs::remove_file(path);
        Error::sqlite(
            format!("cannot write the sample table {}", path.display()),
            err,
        )
    })
}

struct Project {
    files: Vec<(String, String)>,
    build: &'static str,
    wasm: String,
    test_flags: &'static str,
    run_flags: &'static str,
}

fn project(args: &NewArgs) -> Result<Project> {
    let name = &args.name;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(Error::invalid(format!("{name:?} is not a module name"))
            .with_hint("use lowercase letters, digits, - and _, starting with a letter (e.g. enrich-users)"));
    }
    let crate_name = name.replace('-', "_");
    let world = world_name(args.world);
    let (source, code) = match (args.lang, args.world) {
        (Lang::Rust, NewWorld::Transform) => ("src/lib.rs", RUST_TRANSFORM),
        (Lang::Rust, NewWorld::Destination) => ("src/lib.rs", RUST_DESTINATION),
        (Lang::Python, NewWorld::Transform) => ("app.py", PY_TRANSFORM),
        (Lang::Python, NewWorld::Destination) => ("app.py", PY_DESTINATION),
        (Lang::Js, NewWorld::Transform) => ("app.js", JS_TRANSFORM),
        (Lang::Js, NewWorld::Destination) => ("app.js", JS_DESTINATION),
    };
    let (build, wasm) = match args.lang {
        Lang::Rust => (
            "cargo build --release",
            format!("target/wasm32-wasip2/release/{crate_name}.wasm"),
        ),
        Lang::Python => ("sh build.sh", format!("{crate_name}.wasm")),
        Lang::Js => ("npm install && npm run build", format!("{crate_name}.wasm")),
    };
    let test_flags = match args.world {
        NewWorld::Transform => "--expect expected.json",
        NewWorld::Destination => {
            "--set url=http://127.0.0.1:8080/hook --allow-host http://127.0.0.1:8080"
        }
    };
    let run_flags = match args.world {
        NewWorld::Transform => "",
        NewWorld::Destination => " --set url=https://… --allow-host https://…",
    };
    let sdk = match args.lang {
        Lang::Rust => sdk_dependency(args.sdk.as_deref())?,
        _ => String::new(),
    };
    // componentize-js: no world exports an incoming-request handler; a transform has no
    // network either, so it leaves fetch() out and imports no wasi:http.
    let js_disabled = match args.world {
        NewWorld::Transform => "-d http -d fetch-event",
        NewWorld::Destination => "-d fetch-event",
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{world}}", world)
            .replace("{{version}}", PACKAGE_VERSION)
            .replace("{{sdk}}", &sdk)
            .replace("{{language}}", language(args.lang))
            .replace("{{source}}", source)
            .replace("{{build}}", build)
            .replace("{{wasm}}", &wasm)
            .replace("{{test_flags}}", test_flags)
            .replace("{{js_disabled}}", js_disabled)
            .replace("{{run_flags}}", run_flags)
    };
    let mut files = vec![
        ("README.md".to_owned(), fill(README)),
        ("rows.json".to_owned(), ROWS.to_owned()),
        (source.to_owned(), fill(code)),
        (
            ".gitignore".to_owned(),
            "target/\n*.wasm\nnode_modules/\n.venv/\n__pycache__/\n.tidemark/\n".to_owned(),
        ),
    ];
    if args.world == NewWorld::Transform {
        files.push(("expected.json".to_owned(), EXPECTED.to_owned()));
    }
    match args.lang {
        Lang::Rust => {
            files.push(("Cargo.toml".to_owned(), fill(RUST_CARGO)));
            files.push((".cargo/config.toml".to_owned(), fill(RUST_CONFIG)));
        }
        Lang::Python => {
            files.push(("requirements.txt".to_owned(), PY_REQUIREMENTS.to_owned()));
            files.push(("build.sh".to_owned(), fill(PY_BUILD)));
        }
        Lang::Js => files.push(("package.json".to_owned(), fill(JS_PACKAGE))),
    }
    if args.lang != Lang::Rust {
        files.extend(
            WIT.iter()
                .map(|(path, text)| ((*path).to_owned(), (*text).to_owned())),
        );
    }
    Ok(Project {
        files,
        build,
        wasm,
        test_flags,
        run_flags,
    })
}

/// The `tidemark-sdk` dependency: `--sdk PATH` or `--sdk GIT-URL`, else the SDK of the tree
/// this binary was built from, by absolute path.
fn sdk_dependency(sdk: Option<&str>) -> Result<String> {
    let toml_string = |text: &str| format!("{text:?}");
    match sdk {
        Some(url) if url.contains("://") || url.starts_with("git@") => {
            Ok(format!("{{ git = {} }}", toml_string(url)))
        }
        Some(path) => {
            let path = Path::new(path);
            if !path.join("Cargo.toml").is_file() {
                return Err(Error::invalid(format!("--sdk {} holds no Cargo.toml", path.display()))
                    .with_hint("pass --sdk with the guest-sdk folder of a Tidemark checkout, or a git URL of the repository"));
            }
            let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
            Ok(format!("{{ path = {} }}", toml_string(&absolute.display().to_string())))
        }
        None => match std::fs::canonicalize(BUILT_SDK) {
            Ok(path) if path.join("Cargo.toml").is_file() => {
                Ok(format!("{{ path = {} }}", toml_string(&path.display().to_string())))
            }
            _ => Err(Error::invalid(format!(
                "the guest SDK this host was built with ({BUILT_SDK}) is not on this machine"
            ))
            .with_hint("pass --sdk with the guest-sdk folder of a Tidemark checkout, or a git URL of the repository")),
        },
    }
}

/// Writes every file under `dir`, which must not exist yet or be empty.
fn write_all(dir: &Path, files: &[(String, String)]) -> Result<()> {
    let occupied = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        return Err(
            Error::invalid(format!("{} exists and is not empty", dir.display()))
                .with_hint("pick another NAME, or --dir with a new folder"),
        );
    }
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| Error::io(format!("cannot create {}", parent.display()), err))?;
        }
        std::fs::write(&path, text)
            .map_err(|err| Error::io(format!("cannot write {}", path.display()), err))?;
    }
    Ok(())
}

fn language(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
    }
}

fn world_name(world: NewWorld) -> &'static str {
    match world {
        NewWorld::Transform => "transform",
        NewWorld::Destination => "destination",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `host new NAME --lang LANG --world WORLD` writes.
    fn made(name: &str, lang: Lang, world: NewWorld) -> Project {
        let args = NewArgs {
            name: name.to_owned(),
            lang,
            world,
            dir: None,
            sdk: None,
        };
        project(&args).expect("a valid name")
    }

    /// The text of file `path` of `project`.
    fn file<'a>(project: &'a Project, path: &str) -> &'a str {
        project
            .files
            .iter()
            .find(|(name, _)| name == path)
            .map(|(_, text)| text.as_str())
            .unwrap_or_else(|| panic!("the project has no {path}"))
    }

    /// The source file `host new NAME --lang LANG --world WORLD` writes.
    fn skeleton(name: &str, lang: Lang, world: NewWorld) -> String {
        let project = made(name, lang, world);
        let source = if lang == Lang::Js { "app.js" } else { "app.py" };
        file(&project, source).to_owned()
    }

    /// `guest-sdk/OTHER-LANGUAGES.md` shows, word for word, the JavaScript and Python
    /// skeletons `host new` writes: the guide cannot drift from the templates.
    #[test]
    fn the_guide_shows_the_skeletons_host_new_writes() {
        let guide = include_str!("../../../guest-sdk/OTHER-LANGUAGES.md");
        for (name, lang, world, fence) in [
            ("filter", Lang::Js, NewWorld::Transform, "```js\n"),
            ("enrich", Lang::Python, NewWorld::Transform, "```python\n"),
            ("hook", Lang::Js, NewWorld::Destination, "```js\n"),
        ] {
            let shown = format!("{fence}{}```", skeleton(name, lang, world));
            assert!(
                guide.contains(&shown),
                "OTHER-LANGUAGES.md lacks the {} skeleton of `host new {name}`:\n{shown}",
                language(lang)
            );
        }
    }

    /// The component the `next:` lines name is the one the build writes, for the world
    /// asked: componentize-js and componentize-py are told that world, and the JavaScript
    /// build keeps fetch() for a destination only.
    #[test]
    fn the_build_writes_the_component_the_next_steps_name() {
        for world in [NewWorld::Transform, NewWorld::Destination] {
            for (lang, build_file) in [(Lang::Js, "package.json"), (Lang::Python, "build.sh")] {
                let project = made("my-hook", lang, world);
                let build = file(&project, build_file);
                assert_eq!(project.wasm, "my_hook.wasm");
                assert!(build.contains("-o my_hook.wasm"), "{build}");
                let world = world_name(world);
                assert!(
                    build.contains(&format!("--world-name {world} "))
                        || build.contains(&format!("-w {world} ")),
                    "{build}"
                );
            }
            let js = made("my-hook", Lang::Js, world);
            let build = file(&js, "package.json");
            assert_eq!(
                build.contains("-d http "),
                world == NewWorld::Transform,
                "{build}"
            );
            assert!(build.contains("-d fetch-event "), "{build}");
        }
    }
}
