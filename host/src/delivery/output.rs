//! Where batches go: the [`Output`] trait the sync loop delivers to, and JSON Lines on
//! standard output or appended to a file. The module chain
//! ([`crate::delivery::chain::Chain`]) is the other output: modules, then lines or a
//! destination module.

use std::fs::File;
use std::future::Future;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::model::error::{Error, Result};
use crate::model::{Batch, Delivered, Usage};

/// Where the sync loop hands each batch.
///
/// Contract: `deliver` returns success only once the batch is durably handed on (for a file:
/// written, flushed and synced), because the sync loop moves the watermark right after it.
/// Delivery is at least once: a batch whose checkpoint was lost comes again with the same id.
/// Whatever the result, it also returns what module calls used on the way, so that a failed
/// attempt is charged to its pipeline like a delivered one.
///
/// An output may run modules in stages (a chain: transforms, then a destination). Such an
/// output also hands rows to a later stage directly ([`Output::deliver_from`]: a dead letter
/// replayed from the module that parked it, a part of a batch split to find a bad row), and
/// says which stage failed the last call and with what rows ([`Output::take_failure`]).
pub trait Output: Send {
    fn deliver(
        &mut self,
        batch: Batch<'_>,
    ) -> impl Future<Output = (Result<Delivered>, Usage)> + Send;

    /// Hands `batch` to stage `stage` and the stages after it; its rows are as that stage
    /// receives them. An empty batch probes stage `stage` alone: it reaches no later stage.
    fn deliver_from(
        &mut self,
        stage: usize,
        batch: Batch<'_>,
    ) -> impl Future<Output = (Result<Delivered>, Usage)> + Send {
        let _no_stages = stage;
        self.deliver(batch)
    }

    /// The module failure of the last delivery, if a module failed it: which stage, and the
    /// rows that stage was given. Taking it clears it.
    fn take_failure(&mut self) -> Option<StageFailure> {
        None
    }

    /// The stage of the module called `module` (its file stem); `None` when no stage has
    /// that name.
    fn stage_of(&self, module: &str) -> Option<usize> {
        let _no_stages = module;
        None
    }

    /// The stage rows rejected by an unnamed module start from (dead letters kept before
    /// letters named their module: the destination's).
    fn last_stage(&self) -> usize {
        0
    }
}

/// A stage of an output that failed a delivery: the module and what it was given.
#[derive(Debug)]
pub struct StageFailure {
    pub stage: usize,
    pub module: String,
    /// The rows as the stage received them.
    pub input: crate::model::Rows,
    /// Rows the stages before it rejected on the way: left behind whatever becomes of the
    /// rest.
    pub rejected: Vec<crate::model::RejectedRow>,
}

/// Writes each row as one line: `{"batch":"…","op":"upsert","row":{…}}`.
pub struct JsonLines {
    writer: BufWriter<Box<dyn Write + Send>>,
    /// The file to fsync after each batch; `None` for standard output and special files.
    sync: Option<File>,
    target: String,
}

impl JsonLines {
    pub fn stdout() -> Self {
        JsonLines {
            writer: BufWriter::with_capacity(1 << 16, Box::new(std::io::stdout())),
            sync: None,
            target: "standard output".to_owned(),
        }
    }

    /// Lines kept in memory, for `host test`: what `host run` would write, byte for byte.
    pub fn capture() -> (Self, Captured) {
        let captured = Captured::default();
        let lines = JsonLines {
            writer: BufWriter::new(Box::new(captured.clone())),
            sync: None,
            target: "the captured output".to_owned(),
        };
        (lines, captured)
    }

    /// Appends to `path`, creating it if needed.
    pub fn append(path: &Path) -> Result<Self> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|err| {
                Error::io(format!("cannot open output file {}", path.display()), err)
                    .with_hint("pass --output with a writable path")
            })?;
        let is_regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
        let sync = if is_regular {
            Some(
                file.try_clone()
                    .map_err(|err| Error::io("cannot open output file", err))?,
            )
        } else {
            None
        };
        Ok(JsonLines {
            writer: BufWriter::with_capacity(1 << 16, Box::new(file)),
            sync,
            target: PathBuf::from(path).display().to_string(),
        })
    }

    fn write_batch(&mut self, batch: Batch<'_>) -> std::io::Result<()> {
        let mut prefix = Vec::with_capacity(batch.id.len() + 16);
        prefix.extend_from_slice(b"{\"batch\":");
        crate::model::json::write_str(&mut prefix, batch.id);
        prefix.extend_from_slice(b",\"op\":\"");
        for (op, row) in batch.rows.iter() {
            self.writer.write_all(&prefix)?;
            self.writer.write_all(op.as_str().as_bytes())?;
            self.writer.write_all(b"\",\"row\":")?;
            self.writer.write_all(row)?;
            self.writer.write_all(b"}\n")?;
        }
        self.writer.flush()?;
        if let Some(file) = &self.sync {
            file.sync_data()?;
        }
        Ok(())
    }
}

/// The lines a [`JsonLines::capture`] was given.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// The bytes written so far, taken out.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(
            &mut self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl JsonLines {
    /// Writes the batch, flushed and synced.
    pub fn deliver_lines(&mut self, batch: Batch<'_>) -> Result<Delivered> {
        self.write_batch(batch).map_err(|err| {
            Error::io(
                format!("cannot write batch {} to {}", batch.id, self.target),
                err,
            )
        })?;
        Ok(Delivered {
            passed_on: batch.rows.len(),
            ..Delivered::default()
        })
    }
}

impl Output for JsonLines {
    async fn deliver(&mut self, batch: Batch<'_>) -> (Result<Delivered>, Usage) {
        (self.deliver_lines(batch), Usage::default())
    }
}
