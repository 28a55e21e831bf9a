//! Unit tests of the pipelines file: parsing, defaults, errors that name the line.

use super::*;

fn parse(text: &str) -> Result<PipelinesFile> {
    PipelinesFile::parse(Path::new("tidemark.toml"), text)
}

#[test]
fn pipelines_take_the_flags_of_host_run() {
    let file = parse(
        r#"
state = "sqlite://state.db"
max_batches_in_flight = 3

[defaults]
batch_size = 250
poll = "2s"

[[pipeline]]
name = "a"
source = "sqlite://a.db"
table = "users"
modules = ["m1.wasm", { path = "m2.wasm", config = { url = "http://x" } }]
config = { list = "abc", n = 5 }
allow_hosts = ["https://api.example.com"]
max_retries = 2
on_poison = "stop"

[[pipeline]]
name = "b"
source = "postgres://postgres@127.0.0.1/test"
table = "app.orders"
batch_size = 10
"#,
    )
    .unwrap();
    assert_eq!(file.state_url, "sqlite://state.db");
    assert_eq!(file.max_batches_in_flight, 3);
    let [a, b] = &file.pipelines[..] else {
        panic!("{:?}", file.pipelines)
    };
    assert_eq!(a.pipeline, "a");
    assert_eq!(a.sync.batch_size, 250);
    assert_eq!(a.sync.poll, Duration::from_secs(2));
    assert_eq!(a.sync.retry.max_retries, 2);
    assert_eq!(a.sync.retry.on_poison, crate::retry::OnPoison::Stop);
    assert_eq!(b.sync.retry.on_poison, crate::retry::OnPoison::Park);
    assert_eq!(a.modules_config.modules.len(), 2);
    assert_eq!(a.modules_config.module_config(0).values.get("url"), None);
    assert_eq!(
        a.modules_config
            .module_config(1)
            .values
            .get("url")
            .map(String::as_str),
        Some("http://x")
    );
    assert_eq!(
        a.modules_config
            .module_config(1)
            .values
            .get("n")
            .map(String::as_str),
        Some("5")
    );
    assert_eq!(a.modules_config.http.allow.len(), 1);
    assert_eq!(b.sync.batch_size, 10);
    assert_eq!(b.state_url, "sqlite://state.db");
}

#[test]
fn mistakes_name_the_line_and_the_key() {
    let base = "[[pipeline]]\nname = \"a\"\nsource = \"sqlite://a.db\"\ntable = \"t\"\n";
    for (extra, says) in [
        ("batchsize = 5\n", "line 5, key batchsize"),
        ("batch_size = \"lots\"\n", "line 5, key batch_size"),
        ("batch_size = 0\n", "batch size 0"),
        ("batch_size = -1\n", "line 5, key batch_size"),
        ("state = \"x\"\n", "key state"),
        ("modules = 5\n", "expected an array"),
    ] {
        let err = parse(&format!("{base}{extra}")).unwrap_err().to_string();
        assert!(err.contains(says), "{extra:?}: {err}");
        assert!(err.contains("tidemark.toml:1: pipeline \"a\""), "{err}");
    }
    let err = parse("stat = 1\n").unwrap_err().to_string();
    assert!(
        err.contains("tidemark.toml:1") && err.contains("stat"),
        "{err}"
    );
    let err = parse(&format!(
        "{base}[[pipeline]]\nname = \"a\"\nsource = \"sqlite://b.db\"\ntable = \"t\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("two pipelines are named \"a\""), "{err}");
    // A key the pipeline sets over a default: the pipeline's line, not the default's.
    let err = parse(&format!(
        "[defaults]\npoll = \"1s\"\n\n{base}poll = \"often\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 8, key poll"), "{err}");
}

#[test]
fn passwords_stay_out_of_the_file() {
    for url in [
        "postgres://u:hunter2@db/x",
        "postgres://u@db/x?password=hunter2",
    ] {
        let base = "[[pipeline]]\nname = \"a\"\ntable = \"t\"\n";
        let err = parse(&format!("{base}source = \"{url}\"\n")).unwrap_err();
        assert!(err.to_string().contains("password"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.hint().unwrap_or_default().contains("source_env"));
    }
}

#[test]
fn a_pipeline_weighs_one_unless_the_file_says_otherwise() {
    let pipeline = |name: &str, extra: &str| {
        format!(
            "[[pipeline]]\nname = \"{name}\"\nsource = \"sqlite://a.db\"\ntable = \"t\"\n{extra}\n"
        )
    };
    let text = format!(
        "[defaults]\nweight = 2\n\n{}{}{}",
        pipeline("heavy", "weight = 5"),
        pipeline("default", ""),
        pipeline("light", "weight = 1")
    );
    let file = parse(&text).unwrap();
    assert_eq!(
        file.weighted(),
        [
            ("heavy".to_owned(), 5),
            ("default".to_owned(), 2),
            ("light".to_owned(), 1)
        ]
    );
    assert_eq!(
        parse(&pipeline("plain", "")).unwrap().weighted(),
        [("plain".to_owned(), 1)]
    );
    for bad in [
        "weight = 0",
        "weight = -1",
        "weight = \"big\"",
        "weight = 1.5",
    ] {
        let err = parse(&pipeline("bad", bad)).unwrap_err();
        assert!(
            err.to_string().contains("line 5, key weight"),
            "{bad}: {err}"
        );
        assert!(err.hint().unwrap().contains("weight = 2"), "{bad}: {err}");
    }
}
