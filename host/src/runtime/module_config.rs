//! A module's configuration and secrets in one pipeline, and the tag every line it logs
//! carries. Secrets leave only masked: never through `Debug`, as digests through `Serialize`,
//! as `***` in text.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::text::escape_guest_text;

/// Configuration and secrets of one module in one pipeline.
///
/// Secret values never leave through `Debug` (keys only) or `Serialize` (keys and a digest of
/// each value, enough for a configuration fingerprint to change with a secret).
#[derive(Default, Clone)]
pub struct ModuleConfig {
    pub values: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
}

impl ModuleConfig {
    /// Each secret's key with a digest of its value, in key order.
    fn secret_digests(&self) -> BTreeMap<&str, String> {
        use sha2::{Digest, Sha256};
        self.secrets
            .iter()
            .map(|(key, value)| {
                let digest = Sha256::digest(value.as_bytes());
                (
                    key.as_str(),
                    format!("sha256:{}", hex::encode(&digest[..8])),
                )
            })
            .collect()
    }

    pub(super) fn get(&self, key: &str) -> Option<String> {
        self.secrets
            .get(key)
            .or_else(|| self.values.get(key))
            .cloned()
    }

    /// `text` as the host may show it: secrets masked, then control characters escaped.
    pub fn shown(&self, text: &str) -> String {
        escape_guest_text(&self.redact(text)).into_owned()
    }

    /// `text` with every secret value replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in self.secrets.values().filter(|secret| !secret.is_empty()) {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

impl std::fmt::Debug for ModuleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleConfig")
            .field("values", &self.values)
            .field(
                "secrets",
                &self
                    .secrets
                    .keys()
                    .map(|key| (key, "***"))
                    .collect::<BTreeMap<_, _>>(),
            )
            .finish()
    }
}

impl serde::Serialize for ModuleConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut config = serializer.serialize_struct("ModuleConfig", 2)?;
        config.serialize_field("values", &self.values)?;
        config.serialize_field("secrets", &self.secret_digests())?;
        config.end()
    }
}

/// Who is talking: the module and the pipeline, for every log line.
#[derive(Debug, Clone)]
pub struct Tag {
    pub module: Arc<str>,
    pub pipeline: Arc<str>,
    pub config: Arc<ModuleConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_wherever_they_appear() {
        let mut config = ModuleConfig::default();
        config.secrets.insert("api_key".into(), "s3cr3t-us6".into());
        config.values.insert("list".into(), "abc".into());
        assert_eq!(
            config.redact("key=s3cr3t-us6; again s3cr3t-us6"),
            "key=***; again ***"
        );
        assert_eq!(config.get("api_key").as_deref(), Some("s3cr3t-us6"));
        assert_eq!(config.get("list").as_deref(), Some("abc"));
        assert_eq!(config.get("missing"), None);
    }
}
