//! PostgreSQL: range digests summed in SQL, presence asked through the key's index.

use std::collections::HashSet;

use sqlx::Row;

use super::{keys_error, TableKeys};
use crate::error::Result;
use crate::key::{Digests, Key};
use crate::model::Position;
use crate::source::pg_copy::Render;
use crate::source::postgres::PgSource;
use crate::source::query;

impl PgSource {
    /// The key as text: digits, a UUID's canonical form, the text itself.
    fn key_text(&self) -> String {
        format!("{}::text", self.keyset.key)
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
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|err| keys_error(&self.plan.table, err))?;
        let digests = rows
            .into_iter()
            .map(|(range, count, sum)| (range as u32, (count, sum)))
            .collect();
        Ok((digests, 0))
    }

    async fn present_keys(&mut self, keys: &[Key]) -> Result<HashSet<Key>> {
        let cast = self.keyset.key_param.replace("{}", "x");
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = ANY(ARRAY(SELECT {cast} FROM unnest($1::text[]) AS u(x)))",
            self.key_text(),
            self.keyset.table,
            self.keyset.key
        );
        let number = self.key_is_number();
        let mut present = HashSet::new();
        for chunk in keys.chunks(super::KEYS_PER_STATEMENT) {
            let texts: Vec<String> = chunk.iter().map(Key::plain).collect();
            let found: Vec<String> = sqlx::query_scalar(&sql)
                .bind(texts)
                .fetch_all(&self.pool)
                .await
                .map_err(|err| keys_error(&self.plan.table, err))?;
            present.extend(found.iter().map(|text| Key::from_text(text, number)));
        }
        Ok(present)
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
        let rows = query::bind_text(&statement)
            .fetch_all(&self.pool)
            .await
            .map_err(|err| keys_error(&self.plan.table, err))?;
        let number = self.key_is_number();
        Ok(rows
            .iter()
            .map(|row| Key::from_text(row.get::<&str, _>(0), number))
            .collect())
    }
}
