//! What a module file is, told from its first bytes before wasmtime parses it: a component,
//! or one of the usual mistakes of a first module (a core module, a Rust `.rlib`, a source
//! file), each refused with the fix. Wasmtime alone would read a text file as WebAssembly
//! text and answer "expected '('", or an archive with "input bytes aren't valid utf-8".

use std::path::Path;

use crate::model::error::Error;

/// Why `bytes` cannot be a component, told from its first bytes, with the fix for each usual
/// mistake; `None` when it starts like one. Checked before wasmtime sees the file, whose text
/// format parser would answer a text file with "expected '('".
pub(super) fn not_a_component(bytes: &[u8], path: &Path) -> Option<Error> {
    let not_one = |what: &str, hint: &str| {
        Some(
            Error::invalid(format!(
                "{} is not a WebAssembly component: {what}",
                path.display()
            ))
            .with_hint(hint.to_owned()),
        )
    };
    const RUST_BUILD: &str = "build a Rust module with `crate-type = [\"cdylib\"]` under [lib] in Cargo.toml and `cargo build --release --target wasm32-wasip2`, then pass target/wasm32-wasip2/release/NAME.wasm";
    match bytes {
        [0, b'a', b's', b'm', 0x0d, 0, 0x01, 0, ..] => None,
        [0, b'a', b's', b'm', 1, 0, 0, 0, ..] => not_one(
            "it is a core WebAssembly module",
            "build for the wasm32-wasip2 target, which makes components (wasm32-unknown-unknown and wasm32-wasip1 make core modules), or wrap it with `wasm-tools component new`",
        ),
        [0, b'a', b's', b'm', ..] => not_one(
            "its WebAssembly version is not one of a component",
            "rebuild it with a toolchain that targets the component model (wasm32-wasip2)",
        ),
        [b'!', b'<', b'a', b'r', b'c', b'h', b'>', ..] => not_one(
            "it is an archive (a Rust .rlib or a static library), not a .wasm file",
            RUST_BUILD,
        ),
        // Binary files have a NUL byte early on; source code, WAT and JSON do not.
        _ if !bytes[..bytes.len().min(1024)].contains(&0) => not_one(
            "it is a text file (a WebAssembly binary starts with \\0asm)",
            "pass --module with the .wasm file your build wrote, not its source",
        ),
        _ => not_one(
            "it does not start with the WebAssembly magic bytes \\0asm",
            "pass --module with a .wasm component (for Rust: target/wasm32-wasip2/release/NAME.wasm)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(bytes: &[u8]) -> Option<String> {
        not_a_component(bytes, Path::new("m.wasm"))
            .map(|err| format!("{err} / {}", err.hint().unwrap_or_default()))
    }

    #[test]
    fn each_usual_mistake_names_its_fix() {
        assert_eq!(refusal(b"\0asm\x0d\0\x01\0rest"), None);
        let core = refusal(b"\0asm\x01\0\0\0rest").unwrap();
        assert!(
            core.contains("core WebAssembly module") && core.contains("wasm32-wasip2"),
            "{core}"
        );
        assert!(core.contains("wasm-tools component new"), "{core}");
        let rlib = refusal(b"!<arch>\n/               0 ").unwrap();
        assert!(rlib.contains("crate-type = [\"cdylib\"]"), "{rlib}");
        let text = refusal(b"export const transformer = {};\n").unwrap();
        assert!(text.contains("is a text file"), "{text}");
        assert!(refusal(b"\x7fELF\x02\x01\x01\0\0")
            .unwrap()
            .contains("magic bytes"));
    }
}
