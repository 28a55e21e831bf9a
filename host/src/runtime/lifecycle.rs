//! A pipeline's modules at start, before any row is read: the configuration keys each
//! declares (`lifecycle.config-keys` of contract 0.2), checked against what the pipeline
//! gives it, then each module's `lifecycle.init`, which checks the values. Either refusal
//! stops the run with exit 2 and nothing read.
//!
//! A module that declares nothing (no `lifecycle` export, every 0.1 module, or `none`) takes
//! any key. Configuration given to the whole pipeline (`--set`, a pipeline's `config`) reaches
//! every module of its chain, so such a key is unknown only when no module takes it; a key
//! given to one module (a module table's `config` in a pipelines file) must be one it takes.

use std::collections::BTreeSet;

use super::call::{Answer, Request};
use super::{ConfigKey, Module, ModuleConfig};
use crate::model::error::{Error, Result};

impl Module {
    /// The configuration keys the module declares; `None` when it does not say (then it takes
    /// any key). Asked in an instance of its own that sees no configuration.
    pub async fn config_keys(&self) -> Result<Option<Vec<ConfigKey>>> {
        if self.pre.lifecycle.is_none() {
            return Ok(None);
        }
        match self.call_lifecycle(Request::ConfigKeys).await? {
            Answer::Keys(keys) => Ok(keys),
            _ => Err(mixed_up(self)),
        }
    }

    /// Calls the module's `init` under its limits: it checks its configuration.
    pub async fn init(&self) -> Result<()> {
        if self.pre.lifecycle.is_none() {
            return Ok(());
        }
        match self.call_lifecycle(Request::Init).await? {
            Answer::Initialized => Ok(()),
            _ => Err(mixed_up(self)),
        }
    }
}

fn mixed_up(module: &Module) -> Error {
    Error::fatal(format!(
        "module {}: the host mixed up a lifecycle call",
        module.name()
    ))
}

/// Starts the modules of one pipeline: asks each for its keys, checks the configuration
/// (`shared` by the pipeline, `own[i]` of module `i` alone), then calls each one's `init`.
pub async fn start(
    pipeline: &str,
    modules: &[Module],
    shared: &ModuleConfig,
    own: &[ModuleConfig],
) -> Result<()> {
    let mut declared = Vec::with_capacity(modules.len());
    for module in modules {
        declared.push((module.name().to_owned(), module.config_keys().await?));
    }
    let view: Vec<(&str, Option<&[ConfigKey]>)> = declared
        .iter()
        .map(|(name, keys)| (name.as_str(), keys.as_deref()))
        .collect();
    check_keys(pipeline, &view, shared, own)?;
    for module in modules {
        module.init().await?;
    }
    Ok(())
}

/// Checks the configuration of a chain against the keys its modules declare, in order:
/// `declared[i]` is module `i`'s name and keys (`None`: takes any). Refuses a key no module
/// takes (or, given to one module, that module does not take) and a required key not given,
/// naming the module and the keys it takes. A secret key given as a plain value is taken,
/// with a warning: it would show in logs.
pub fn check_keys(
    pipeline: &str,
    declared: &[(&str, Option<&[ConfigKey]>)],
    shared: &ModuleConfig,
    own: &[ModuleConfig],
) -> Result<()> {
    let none = ModuleConfig::default();
    let anyone_takes_any = declared.iter().any(|(_, keys)| keys.is_none());
    for key in given(shared) {
        let takers = declared
            .iter()
            .filter(|(_, keys)| keys.is_none_or(|keys| keys.iter().any(|k| k.name == key)));
        if anyone_takes_any || takers.count() > 0 {
            continue;
        }
        return Err(match declared {
            [(module, Some(keys))] => unknown(module, key, keys),
            _ => Error::invalid(format!(
                "no module of pipeline {pipeline:?} takes configuration key {key:?}: {}",
                declared
                    .iter()
                    .map(|(module, keys)| format!(
                        "{module} takes {}",
                        listed(keys.unwrap_or_default())
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
            .with_hint(
                "fix or drop the key (--set, --secret, or the pipelines file); `host check \
                 --module FILE` lists the keys of each module with what each is for",
            ),
        });
    }
    for (index, (module, keys)) in declared.iter().enumerate() {
        let Some(keys) = keys else { continue };
        let own = own.get(index).unwrap_or(&none);
        if let Some(key) = given(own).find(|key| !keys.iter().any(|k| k.name == *key)) {
            return Err(unknown(module, key, keys));
        }
        let has = |name: &str| given(shared).chain(given(own)).any(|key| key == name);
        if let Some(missing) = keys.iter().find(|k| k.required && !has(&k.name)) {
            let flag = match missing.secret {
                true => format!("--secret {}=ENV_VAR", missing.name),
                false => format!("--set {}=VALUE", missing.name),
            };
            let about = match missing.description.trim() {
                "" => String::new(),
                text => format!(" ({text})"),
            };
            return Err(Error::invalid(format!(
                "module {module} needs configuration key {:?}{about}, which pipeline {pipeline:?} does not give it; it takes {}",
                missing.name,
                listed(keys)
            ))
            .with_hint(format!("pass {flag}, or set it in the pipelines file")));
        }
        for key in keys.iter().filter(|k| k.secret) {
            if shared.values.contains_key(&key.name) || own.values.contains_key(&key.name) {
                tracing::warn!(
                    "{pipeline}: configuration key {:?} of module {module} is a secret, given \
                     as a plain value: pass it with --secret {}=ENV_VAR (or `secrets` in the \
                     pipelines file) so that the host masks it",
                    key.name,
                    key.name
                );
            }
        }
    }
    Ok(())
}

/// The keys given in `config`, values and secrets.
fn given(config: &ModuleConfig) -> impl Iterator<Item = &str> + '_ {
    config
        .values
        .keys()
        .chain(config.secrets.keys())
        .map(String::as_str)
        .collect::<BTreeSet<_>>()
        .into_iter()
}

fn unknown(module: &str, key: &str, keys: &[ConfigKey]) -> Error {
    Error::invalid(format!(
        "module {module} does not take configuration key {key:?}; it takes {}",
        listed(keys)
    ))
    .with_hint(fix_key_hint(module))
}

fn fix_key_hint(module: &str) -> String {
    format!(
        "fix or drop the key (--set, --secret, or the pipelines file); `host check --module \
         {module}.wasm` lists the keys with what each is for"
    )
}

/// `list_id (required), api_key (required, secret), status`, or `no keys`.
pub fn listed(keys: &[ConfigKey]) -> String {
    if keys.is_empty() {
        return "no keys".to_owned();
    }
    keys.iter().map(flagged).collect::<Vec<_>>().join(", ")
}

/// `api_key (required, secret)`: the key's name and what it is.
pub fn flagged(key: &ConfigKey) -> String {
    match (key.required, key.secret) {
        (false, false) => key.name.clone(),
        (true, false) => format!("{} (required)", key.name),
        (false, true) => format!("{} (secret)", key.name),
        (true, true) => format!("{} (required, secret)", key.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, required: bool, secret: bool) -> ConfigKey {
        ConfigKey {
            name: name.to_owned(),
            description: format!("the {name}"),
            required,
            secret,
        }
    }

    fn config(values: &[&str], secrets: &[&str]) -> ModuleConfig {
        let mut config = ModuleConfig::default();
        for key in values {
            config.values.insert((*key).to_owned(), "v".to_owned());
        }
        for key in secrets {
            config.secrets.insert((*key).to_owned(), "s".to_owned());
        }
        config
    }

    #[test]
    fn a_module_refuses_keys_it_does_not_take_and_needs_its_required_ones() {
        let keys = [key("list_id", true, false), key("api_key", true, true)];
        let one = [("mailchimp", Some(&keys[..]))];
        let ok = config(&["list_id"], &["api_key"]);
        assert!(check_keys("p", &one, &ok, &[]).is_ok());

        let typo = config(&["list_id", "lst_id"], &["api_key"]);
        let err = check_keys("p", &one, &typo, &[]).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Invalid);
        assert_eq!(
            err.to_string(),
            "module mailchimp does not take configuration key \"lst_id\"; it takes list_id \
             (required), api_key (required, secret)"
        );

        let missing = config(&["list_id"], &[]);
        let err = check_keys("p", &one, &missing, &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("needs configuration key \"api_key\" (the api_key)"),
            "{err}"
        );
        assert_eq!(
            err.hint(),
            Some("pass --secret api_key=ENV_VAR, or set it in the pipelines file")
        );
    }

    #[test]
    fn modules_that_declare_nothing_take_anything() {
        let any = [("legacy", None)];
        assert!(check_keys("p", &any, &config(&["whatever"], &["x"]), &[]).is_ok());
        let none: [ConfigKey; 0] = [];
        let strict = [("strict", Some(&none[..]))];
        let err = check_keys("p", &strict, &config(&["whatever"], &[]), &[]).unwrap_err();
        assert!(err.to_string().ends_with("it takes no keys"), "{err}");
    }

    #[test]
    fn a_key_of_the_pipeline_is_unknown_only_when_no_module_of_the_chain_takes_it() {
        let mask = [key("columns", false, false)];
        let hook = [key("url", true, false)];
        let chain = [("mask_pii", Some(&mask[..])), ("webhook", Some(&hook[..]))];
        assert!(check_keys("p", &chain, &config(&["columns", "url"], &[]), &[]).is_ok());
        let err = check_keys("p", &chain, &config(&["url", "colums"], &[]), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no module of pipeline \"p\" takes configuration key \"colums\": mask_pii takes \
             columns; webhook takes url (required)"
        );
        // Given to one module alone, a key must be one that module takes.
        let own = [config(&["url"], &[]), config(&[], &[])];
        let err = check_keys("p", &chain, &config(&["url"], &[]), &own).unwrap_err();
        assert!(
            err.to_string().starts_with("module mask_pii does not take"),
            "{err}"
        );
        let own = [config(&[], &[]), config(&["url"], &[])];
        assert!(check_keys("p", &chain, &config(&[], &[]), &own).is_ok());
    }
}
