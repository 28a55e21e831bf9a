//! The front: what the user typed, turned into one validated configuration. clap's flags
//! ([`cli`]), their checks ([`config`]) and the pipelines file ([`pipelines_file`]); the layers
//! below never see a flag.

pub mod cli;
pub mod config;
pub mod pipelines_file;
pub mod relative_paths;
