//! SQLite: no MD5 in SQL, so a check reads the keys and sums their digests here (a local
//! file, read from the key's index); presence is asked through the same index.

use std::collections::HashSet;

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::model::error::Result;
use crate::model::key::{Digests, Key};
use crate::model::Position;
use crate::source::keys::{digests_of, keys_error, TableKeys};
use crate::source::keyset::{Arg, Statement};
use crate::source::sqlite::SqliteSource;

impl SqliteSource {
    /// The key's text and storage class: integers and reals are JSON numbers in rows.
    fn key_columns(&self) -> String {
        let key = &self.keyset.key;
        format!("CAST({key} AS TEXT), typeof({key}) IN ('integer', 'real')")
    }

    fn key_of(&self, row: &SqliteRow) -> Result<Key> {
        let text: String = row
            .try_get(0)
            .map_err(|err| keys_error(&self.plan.table, err))?;
        let number: bool = row
            .try_get(1)
            .map_err(|err| keys_error(&self.plan.table, err))?;
        Ok(Key::from_text(&text, number))
    }
}

/// A key as the driver binds it: with its storage class (`i:7`, `t:abc`).
fn tagged(key: &Key) -> String {
    match (key.is_number(), key.json().contains(['.', 'e', 'E'])) {
        (true, false) => format!("i:{}", key.plain()),
        (true, true) => format!("r:{}", key.plain()),
        (false, _) => format!("t:{}", key.plain()),
    }
}

impl TableKeys for SqliteSource {
    async fn key_digests(&mut self, bits: u32) -> Result<(Digests, u64)> {
        let sql = format!("SELECT {} FROM {}", self.key_columns(), self.keyset.table);
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|err| keys_error(&self.plan.table, err))?;
        let keys = rows
            .iter()
            .map(|row| self.key_of(row))
            .collect::<Result<Vec<Key>>>()?;
        Ok((digests_of(&keys, bits), keys.len() as u64))
    }

    async fn present_keys(&mut self, keys: &[Key]) -> Result<HashSet<Key>> {
        let mut present = HashSet::new();
        for chunk in keys.chunks(crate::source::keys::KEYS_PER_STATEMENT) {
            let tags: Vec<String> = chunk.iter().map(tagged).collect();
            let statement = Statement {
                sql: format!(
                    "SELECT {} FROM {} WHERE {} IN ({})",
                    self.key_columns(),
                    self.keyset.table,
                    self.keyset.key,
                    vec!["?"; chunk.len()].join(", ")
                ),
                args: tags.iter().map(|tag| Arg::Key(tag)).collect(),
            };
            let rows = self
                .bind(&statement)
                .fetch_all(&self.pool)
                .await
                .map_err(|err| keys_error(&self.plan.table, err))?;
            for row in &rows {
                present.insert(self.key_of(row)?);
            }
        }
        Ok(present)
    }

    async fn delivered_keys(
        &mut self,
        through: &Position,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        let after = after.map(tagged);
        let statement =
            self.keyset
                .delivered_keys(&self.key_columns(), through, after.as_deref(), limit);
        let rows = self
            .bind(&statement)
            .fetch_all(&self.pool)
            .await
            .map_err(|err| keys_error(&self.plan.table, err))?;
        rows.iter().map(|row| self.key_of(row)).collect()
    }
}
