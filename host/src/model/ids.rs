//! Deterministic ids: the same input always gets the same id, so that a destination can send
//! an id as an idempotency key and drop what it has already seen. Batch ids are made in
//! [`crate::engine::sync`] (a cursor range, a set of dead letters) and [`crate::delivery::poison`] (a part of a
//! batch split off to find a bad row).

use sha2::{Digest, Sha256};

/// 32 hex digits from the SHA-256 of `parts`, each ended by a NUL so that no two lists of
/// parts run together into the same text.
pub fn digest<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}
