//! Dead letters as the sync loop keeps them: the rows a batch left behind (rejected by a
//! module, or parked because a module failed on them alone), each with its key and cursor,
//! and the rule that keeps older data from overwriting newer: a row that comes through again
//! with another cursor is a newer version (the loop reads forward), so the letters of its
//! older versions are superseded and `host retry` skips them.
//!
//! A letter's key and cursor are read from its row by the pipeline's key and cursor columns.
//! A row a transform reshaped may no longer show them; such a letter has no key and is never
//! superseded.

use std::collections::HashMap;
use std::collections::HashSet;

use serde_json::value::RawValue;

use crate::model::error::Result;
use crate::model::{Delivered, Rows};
use crate::state::{NewLetter, PipelineState, StateStore};

/// The letters of one pipeline that a newer version of their row could supersede. The
/// default holds none, and keys none: a placeholder until they are loaded.
#[derive(Default)]
pub struct Letters {
    key_column: String,
    cursor_column: String,
    /// Keys of the letters not yet superseded: a batch without any of them costs nothing.
    live: HashSet<String>,
    /// The lease token the pipeline runs under, if a worker holds its lease.
    fence: Option<i64>,
}

impl Letters {
    /// The live letters of the pipeline of `state`.
    pub async fn load(store: &StateStore, state: &PipelineState) -> Result<Self> {
        Ok(Letters {
            key_column: state.identity.key.clone(),
            cursor_column: state.identity.cursor.clone(),
            live: store.live_letter_keys(&state.name).await?,
            fence: state.fence,
        })
    }

    /// The live letters of pipeline `name`, keyed by the columns the store knows for it (none
    /// for a pipeline it does not hold: its letters then have no key).
    pub async fn for_pipeline(store: &StateStore, name: &str) -> Result<Self> {
        match store.load(name).await? {
            Some(state) => Self::load(store, &state).await,
            None => Ok(Letters {
                key_column: String::new(),
                cursor_column: String::new(),
                live: store.live_letter_keys(name).await?,
                fence: None,
            }),
        }
    }

    /// After batch `batch_id` of `rows` (as read) came through: supersedes the older letters
    /// of the rows it carried, then keeps what it left behind, naming each parked row by key
    /// in the log.
    pub async fn keep(
        &mut self,
        store: &StateStore,
        pipeline: &str,
        batch_id: &str,
        rows: &Rows,
        delivered: &Delivered,
    ) -> Result<()> {
        if !self.live.is_empty() {
            for (_, row) in rows.iter() {
                let (Some(key), cursor) = self.version(row) else {
                    continue;
                };
                if !self.live.remove(&key) {
                    continue;
                }
                let superseded = store.supersede(pipeline, &key, cursor.as_deref()).await?;
                if superseded > 0 {
                    tracing::info!(
                        "{pipeline}: {superseded} dead letter(s) of row {}={key} superseded by \
                         its version at {}={}; `host retry` skips them",
                        self.key_column,
                        self.cursor_column,
                        cursor.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        if delivered.rejected.is_empty() && delivered.parked.is_empty() {
            return Ok(());
        }
        let versions: Vec<(Option<String>, Option<String>)> = delivered
            .letters()
            .map(|letter| self.version_of_element(&letter.row))
            .collect();
        let parked = delivered.rejected.len();
        let letters: Vec<NewLetter<'_>> = delivered
            .letters()
            .zip(&versions)
            .enumerate()
            .map(|(position, (row, (key, cursor)))| NewLetter {
                row,
                parked: position >= parked,
                key: key.as_deref(),
                cursor: cursor.as_deref(),
            })
            .collect();
        store
            .record_letters(pipeline, batch_id, self.fence, &letters)
            .await?;
        for letter in &letters {
            if let Some(key) = letter.key {
                self.live.insert(key.to_owned());
            }
            if letter.parked {
                tracing::warn!(
                    "{pipeline}: parked row {}={} of batch {}: {}; see `host dead-letters \
                     --pipeline {pipeline}`",
                    self.key_column,
                    letter.key.unwrap_or("(not in the row)"),
                    letter.row.batch.as_deref().unwrap_or(batch_id),
                    letter.row.reason
                );
            }
        }
        if !delivered.rejected.is_empty() {
            tracing::warn!(
                "{pipeline}: modules rejected {} rows of batch {batch_id}; see `host \
                 dead-letters --pipeline {pipeline}`",
                delivered.rejected.len(),
            );
        }
        Ok(())
    }

    /// The key and cursor of a row object, as JSON text.
    fn version(&self, row: &[u8]) -> (Option<String>, Option<String>) {
        let Ok(columns) = serde_json::from_slice::<HashMap<String, &RawValue>>(row) else {
            return (None, None);
        };
        let text = |column: &str| columns.get(column).map(|value| value.get().to_owned());
        (text(&self.key_column), text(&self.cursor_column))
    }

    /// The key and cursor of an `{"op", "row"}` element.
    fn version_of_element(&self, element: &str) -> (Option<String>, Option<String>) {
        #[derive(serde::Deserialize)]
        struct Element<'a> {
            #[serde(borrow)]
            row: &'a RawValue,
        }
        match serde_json::from_str::<Element<'_>>(element) {
            Ok(element) => self.version(element.row.get().as_bytes()),
            Err(_) => (None, None),
        }
    }
}
