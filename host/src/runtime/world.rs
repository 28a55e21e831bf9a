//! Which world of the contract a component implements, and of which version: told from the
//! names of its exports, before any of its code runs.

use crate::error::{Error, Result};

/// The WIT package every module implements, and the versions this host runs.
pub const PACKAGE: &str = "tidemark:processor";
pub const PACKAGE_VERSION: &str = "0.1.0";

/// Which world of the contract a module implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Transform,
    Destination,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::Transform => "transform",
            World::Destination => "destination",
        }
    }
}

/// The world and version a component implements, from the names of its exports.
pub(super) fn world_of(module: &str, exports: &[String]) -> Result<(World, String)> {
    let prefix = format!("{PACKAGE}/");
    for export in exports {
        let Some(rest) = export.strip_prefix(&prefix) else {
            continue;
        };
        let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let world = match interface {
            "transformer" => World::Transform,
            "deliverer" => World::Destination,
            _ => continue,
        };
        if !is_compatible(version) {
            return Err(Error::invalid(format!(
                "module {module} was built against {PACKAGE}@{version}, but this host runs {PACKAGE}@{PACKAGE_VERSION}"
            ))
            .with_hint(format!("rebuild it against the wit/ of this host ({PACKAGE}@{PACKAGE_VERSION})")));
        }
        return Ok((world, version.to_owned()));
    }
    Err(Error::invalid(format!(
        "module {module} implements neither the transform nor the destination world of {PACKAGE}; it exports: {}",
        if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") }
    ))
    .with_hint("build it against wit/processor.wit, e.g. with the tidemark-sdk crate's transform! or destination! macro"))
}

/// Semver compatibility for 0.x: the same minor version.
fn is_compatible(version: &str) -> bool {
    let minor = |v: &str| {
        let mut parts = v.split('.');
        (
            parts.next().map(str::to_owned),
            parts.next().map(str::to_owned),
        )
    };
    let (major, minor_part) = minor(version);
    let (our_major, our_minor) = minor(PACKAGE_VERSION);
    major == our_major && (our_major.as_deref() != Some("0") || minor_part == our_minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worlds_are_told_apart_by_their_exports() {
        let exports = vec!["tidemark:processor/transformer@0.1.0".to_owned()];
        assert_eq!(world_of("m", &exports).unwrap().0, World::Transform);
        let exports = vec!["tidemark:processor/deliverer@0.1.3".to_owned()];
        assert_eq!(world_of("m", &exports).unwrap().0, World::Destination);
        let newer = vec!["tidemark:processor/transformer@0.2.0".to_owned()];
        assert!(world_of("m", &newer)
            .unwrap_err()
            .to_string()
            .contains("0.2.0"));
        let command = vec!["wasi:cli/run@0.2.0".to_owned()];
        let err = world_of("m", &command).unwrap_err();
        assert!(err.to_string().contains("neither"), "{err}");
        assert!(err.to_string().contains("wasi:cli/run@0.2.0"));
    }
}
