//! The `transform` world of `wit/processor.wit`, generated for `tidemark-sdk`, which
//! re-exports it as `tidemark_sdk::transform`: use that crate, not this one.
//!
//! A crate of its own because both worlds export `lifecycle`, and wit-bindgen names the
//! macro that exports an interface after the interface alone, at the root of the crate that
//! generates it: the two worlds' bindings cannot share one crate. The SDK generates the
//! `destination` world on top of these types.

wit_bindgen::generate!({
    world: "transform",
    path: "../../wit",
    pub_export_macro: true,
    export_macro_name: "export_world",
    default_bindings_module: "tidemark_sdk::transform",
});
