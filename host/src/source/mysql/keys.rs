//! MySQL and MariaDB: range digests summed in SQL, presence asked through the key's index.

use std::collections::HashSet;

use crate::model::error::Result;
use crate::model::key::{Digests, Key};
use crate::model::Position;
use crate::source::keys::{delivered_texts, present_texts, summed_digests, TableKeys};
use crate::source::mysql::{MySqlSource, Render};

impl MySqlSource {
    fn key_text(&self) -> String {
        format!("CAST({} AS CHAR)", self.keyset.key)
    }

    fn key_is_number(&self) -> bool {
        matches!(
            self.columns[self.plan.key].render,
            Render::I64 | Render::U64
        )
    }
}

impl TableKeys for MySqlSource {
    async fn key_digests(&mut self, bits: u32) -> Result<(Digests, u64)> {
        let shift = 32 - bits.min(32);
        // The first 32 bits of the MD5 of the key's text, as an unsigned number.
        let hash = format!(
            "CAST(CONV(LEFT(MD5({}), 8), 16, 10) AS UNSIGNED)",
            self.key_text()
        );
        let sql = format!(
            "SELECT CAST(h >> {shift} AS SIGNED), COUNT(*), CAST(SUM(h) AS SIGNED) \
             FROM (SELECT {hash} AS h FROM {}) s GROUP BY 1",
            self.keyset.table
        );
        summed_digests(&self.pool, &self.plan.table, &sql).await
    }

    async fn present_keys(&mut self, keys: &[Key]) -> Result<HashSet<Key>> {
        let sql = |count: usize| {
            let params = vec![self.keyset.key_param.replace("{}", "?"); count].join(", ");
            format!(
                "SELECT {} FROM {} WHERE {} IN ({params})",
                self.key_text(),
                self.keyset.table,
                self.keyset.key
            )
        };
        let table = (self.plan.table.as_str(), self.key_is_number());
        present_texts(&self.pool, table, keys, sql, |query, texts| {
            texts.iter().fold(query, |query, text| query.bind(text))
        })
        .await
    }

    async fn delivered_keys(
        &mut self,
        through: &Position,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        let after = after.map(Key::plain);
        let statement =
            self.keyset
                .delivered_keys(&self.key_text(), through, after.as_deref(), limit);
        let table = (self.plan.table.as_str(), self.key_is_number());
        delivered_texts(&self.pool, table, &statement).await
    }
}
