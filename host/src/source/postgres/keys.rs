//! PostgreSQL: range digests summed in SQL, presence asked through the key's index.

use std::collections::HashSet;

use crate::model::error::Result;
use crate::model::key::{Digests, Key};
use crate::model::Position;
use crate::source::keys::{delivered_texts, present_texts, summed_digests, TableKeys};
use crate::source::postgres::pages::Render;
use crate::source::postgres::PgSource;

impl PgSource {
    /// The key as text, as the rows carry it: digits, a UUID's canonical form, the text
    /// itself. `concat` renders a `char(n)` with its padding, as COPY does, where `::text`
    /// would trim it and no key would match its row's.
    fn key_text(&self) -> String {
        match self.key_is_number() {
            true => format!("{}::text", self.keyset.key),
            false => format!("concat({})", self.keyset.key),
        }
    }

    fn key_is_number(&self) -> bool {
        matches!(
            self.columns[self.plan.key].render,
            Render::I16 | Render::I32 | Render::I64
        )
    }
}

impl TableKeys for PgSource {
    async fn key_digests(&mut self, bits: u32) -> Result<(Digests, u64)> {
        let shift = 32 - bits.min(32);
        // The first 32 bits of the MD5 of the key's text, as an unsigned number.
        let hash = format!("('x' || left(md5({}), 8))::bit(32)::int8", self.key_text());
        let sql = format!(
            "SELECT h >> {shift}, COUNT(*), SUM(h)::int8 FROM (SELECT {hash} AS h FROM {}) s \
             GROUP BY 1",
            self.keyset.table
        );
        summed_digests(&self.pool, &self.plan.table, &sql).await
    }

    async fn present_keys(&mut self, keys: &[Key]) -> Result<HashSet<Key>> {
        let cast = self.keyset.key_param.replace("{}", "x");
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = ANY(ARRAY(SELECT {cast} FROM unnest($1::text[]) AS u(x)))",
            self.key_text(),
            self.keyset.table,
            self.keyset.key
        );
        let table = (self.plan.table.as_str(), self.key_is_number());
        present_texts(
            &self.pool,
            table,
            keys,
            |_| sql.clone(),
            |query, texts| query.bind(texts),
        )
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
