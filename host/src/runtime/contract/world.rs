//! Which world of the contract a component implements, and of which version: told from the
//! names of its exports, before any of its code runs.

use crate::model::error::{Error, Result};

/// The WIT package every module implements, and the version of `wit/processor.wit`.
pub const PACKAGE: &str = "tidemark:processor";
pub const PACKAGE_VERSION: &str = "0.2.0";

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

/// The versions of the contract this host runs: each 0.x minor version is a contract of its
/// own (semver gives no compatibility between 0.x minors), so each has its bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `wit/legacy/0.1.0`: a transform returns rows or an error string; no `lifecycle`.
    V0_1,
    /// `wit/processor.wit`: transforms reject rows and say retry-later or fatal; optional
    /// `lifecycle`.
    V0_2,
}

/// What a component implements, from its exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Implements {
    pub world: World,
    pub contract: Contract,
    /// The exact version of its exports, as built (`0.2.0`, `0.1.3`).
    pub version: String,
    /// Whether it exports `lifecycle` (0.2 and later): declared configuration keys and `init`.
    pub lifecycle: bool,
}

/// The world and version a component implements, from the names of its exports.
pub(crate) fn world_of(module: &str, exports: &[String]) -> Result<Implements> {
    let prefix = format!("{PACKAGE}/");
    let mut lifecycle = false;
    let mut found = None;
    for export in exports {
        let Some(rest) = export.strip_prefix(&prefix) else {
            continue;
        };
        let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let world = match interface {
            "transformer" => World::Transform,
            "deliverer" => World::Destination,
            "lifecycle" => {
                lifecycle = true;
                continue;
            }
            _ => continue,
        };
        let Some(contract) = contract_of(version) else {
            return Err(Error::invalid(format!(
                "module {module} was built against {PACKAGE}@{version}, but this host runs \
                 {PACKAGE}@{PACKAGE_VERSION} and 0.1.x"
            ))
            .with_hint(format!(
                "rebuild it against the wit/ of this host ({PACKAGE}@{PACKAGE_VERSION}), or run it with a host that knows {version}"
            )));
        };
        found = Some((world, contract, version.to_owned()));
    }
    let Some((world, contract, version)) = found else {
        return Err(Error::invalid(format!(
            "module {module} implements neither the transform nor the destination world of {PACKAGE}; it exports: {}",
            if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") }
        ))
        .with_hint("build it against wit/processor.wit, e.g. with the tidemark-sdk crate's transform! or destination! macro"));
    };
    Ok(Implements {
        world,
        contract,
        version,
        // `lifecycle` is no export of 0.1: a 0.1 module that happens to have one is not asked.
        lifecycle: lifecycle && contract != Contract::V0_1,
    })
}

/// The contract of an export's version: 0.1.x and 0.2.x (any patch, as semver allows).
fn contract_of(version: &str) -> Option<Contract> {
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some("0"), Some("1")) => Some(Contract::V0_1),
        (Some("0"), Some("2")) => Some(Contract::V0_2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exports(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn worlds_and_versions_are_told_apart_by_their_exports() {
        let legacy = world_of("m", &exports(&["tidemark:processor/transformer@0.1.0"])).unwrap();
        assert_eq!(legacy.world, World::Transform);
        assert_eq!(legacy.contract, Contract::V0_1);
        assert!(!legacy.lifecycle);
        let patched = world_of("m", &exports(&["tidemark:processor/deliverer@0.1.3"])).unwrap();
        assert_eq!(patched.world, World::Destination);
        assert_eq!(patched.version, "0.1.3");

        let current = world_of(
            "m",
            &exports(&[
                "tidemark:processor/lifecycle@0.2.0",
                "tidemark:processor/transformer@0.2.0",
            ]),
        )
        .unwrap();
        assert_eq!(current.contract, Contract::V0_2);
        assert!(current.lifecycle);
        let bare = world_of("m", &exports(&["tidemark:processor/deliverer@0.2.1"])).unwrap();
        assert_eq!(
            (bare.world, bare.contract, bare.lifecycle),
            (World::Destination, Contract::V0_2, false)
        );
    }

    #[test]
    fn unknown_versions_and_other_components_are_refused() {
        let newer = world_of("m", &exports(&["tidemark:processor/transformer@0.3.0"]));
        let err = newer.unwrap_err();
        assert!(err.to_string().contains("0.3.0"), "{err}");
        assert!(err.to_string().contains("0.2.0"), "{err}");
        assert!(world_of("m", &exports(&["tidemark:processor/transformer@1.0.0"])).is_err());

        let command = exports(&["wasi:cli/run@0.2.0"]);
        let err = world_of("m", &command).unwrap_err();
        assert!(err.to_string().contains("neither"), "{err}");
        assert!(err.to_string().contains("wasi:cli/run@0.2.0"));
        let only_lifecycle = exports(&["tidemark:processor/lifecycle@0.2.0"]);
        assert!(world_of("m", &only_lifecycle).is_err());
    }
}
