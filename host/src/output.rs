//! Where batches go. For now: JSON Lines on standard output or appended to a file.
//!
//! Contract of a [`Destination`]: `deliver` returns only once the batch is durably handed on
//! (for a file: written, flushed and synced), because the sync loop moves the watermark right
//! after it. Delivery is at least once: a batch whose checkpoint was lost comes again with the
//! same id, so a destination that must not see duplicates drops a batch id it already has.

use std::fs::File;
use std::future::Future;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::source::Rows;

/// One batch as it is handed on.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Deterministic: the same pipeline and cursor range give the same id.
    pub id: &'a str,
    pub pipeline: &'a str,
    pub rows: &'a Rows,
}

/// What became of a batch that was handed on: every row not listed here was delivered.
#[derive(Debug, Default)]
pub struct Delivered {
    pub rejected: Vec<RejectedRow>,
    /// What the processors used on the attempt that delivered.
    pub usage: GuestUsage,
}

/// What processor calls used, summed over a chain.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GuestUsage {
    pub time: Duration,
    /// Fuel burned; 0 when fuel is not metered.
    pub fuel: u64,
    /// The largest linear memory any one instance reached.
    pub peak_memory: u64,
}

impl GuestUsage {
    pub fn add(&mut self, time: Duration, fuel: Option<u64>, peak_memory: u64) {
        self.time += time;
        self.fuel += fuel.unwrap_or(0);
        self.peak_memory = self.peak_memory.max(peak_memory);
    }
}

/// A row the destination did not take, as it received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRow {
    /// Position in the batch the destination received.
    pub index: u32,
    /// The `{"op", "row"}` element, as JSON text; `null` if the index was out of range.
    pub row: String,
    pub reason: String,
}

pub trait Destination: Send {
    fn deliver(&mut self, batch: Batch<'_>) -> impl Future<Output = Result<Delivered>> + Send;
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
        crate::json::write_str(&mut prefix, batch.id);
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

impl Destination for JsonLines {
    async fn deliver(&mut self, batch: Batch<'_>) -> Result<Delivered> {
        self.write_batch(batch).map_err(|err| {
            Error::io(
                format!("cannot write batch {} to {}", batch.id, self.target),
                err,
            )
        })?;
        Ok(Delivered::default())
    }
}
