//! Reading ahead: pages read by a task of their own while the sync loop delivers.
//!
//! Issue 13: a statement per page costs a round trip and the statement's planning and start,
//! and the database sat idle while a page was handed on. Here one statement reads the rows of
//! [`PAGES_PER_READ`] pages, split into pages of exactly `limit` rows as they arrive, each with
//! the exact position of its own last row; a task keeps reading, statement after statement,
//! while the loop delivers. At most [`QUEUED`] finished pages wait for the loop (the task then
//! waits, and the database for the task), so memory stays a small multiple of the batch size
//! whatever the table's size. A statement that waits so holds its connection and snapshot for
//! as long as the loop takes to deliver its pages, which is why a statement reads only a few.
//!
//! Page `i` of a read holds rows `i·limit + 1 ..= (i+1)·limit` after where the read started,
//! in the same `(cursor, key)` order and up to the same horizon as a statement per page would,
//! so the batches and their ids are the same; only the snapshot is one per statement instead
//! of one per page, which the horizon makes equivalent (no row below it can still commit). A
//! page is served only to the read that continues exactly where the previous page ended, with
//! the same horizon and page size; anything else (a redelivery, a new pass, an error) starts
//! over from the position asked for.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::keyset::Keyset;
use super::plan::Plan;
use super::{Page, Until};
use crate::model::error::{Error, Result};
use crate::model::{Position, Rows};

/// Finished pages that may wait for the loop.
const QUEUED: usize = 2;

/// Pages one statement reads: enough that a statement's start costs little per page, few
/// enough that a slow destination does not keep a statement (its connection, its snapshot)
/// open for long.
pub(super) const PAGES_PER_READ: usize = 8;

/// The rows one statement of a read ahead asks for.
pub(super) fn rows_per_read(limit: usize) -> usize {
    limit.max(1).saturating_mul(PAGES_PER_READ)
}

/// Where pages go as a read finishes them.
pub(super) type PageSender = mpsc::Sender<Result<Page>>;

/// The read ahead of one source, if one runs.
#[derive(Default)]
pub(super) struct ReadAhead {
    running: Option<Running>,
}

struct Running {
    /// Where the next page starts: the end of the last page served.
    next: Position,
    horizon: Option<String>,
    limit: usize,
    /// `None` until the loop asks for the page after the first.
    pages: Option<mpsc::Receiver<Result<Page>>>,
}

impl ReadAhead {
    /// Forgets the pages read so far: the next read starts over (a new pass, with a new
    /// horizon, must not be served from the snapshot of the last one).
    pub fn stop(&mut self) {
        // The task sees the channel closed and stops after its statement.
        self.running = None;
    }

    /// The page of at most `limit` rows after `after` up to `until`: the next one of the
    /// read ahead when it continues there (`statements` start it at the second page), else
    /// one read on its own. A re-read through a batch's end reads that one page alone.
    pub async fn read(
        &mut self,
        after: &Position,
        until: Until<'_>,
        limit: usize,
        statements: impl Statements,
    ) -> Result<Page> {
        let horizon = match until {
            Until::Horizon(horizon) => horizon,
            Until::Through(_) => {
                self.stop();
                return read_page(&statements, after, limit).await;
            }
        };
        let continues = self.running.as_ref().is_some_and(|running| {
            running.next == *after
                && running.horizon.as_deref() == horizon
                && running.limit == limit
        });
        if !continues {
            // The first page alone, as a statement of its own, like every page before reads
            // ahead: the pages after it are read once the loop asks for the second, that is
            // while the first is handed on, not before.
            self.stop();
            let page = read_page(&statements, after, limit).await?;
            if let (Some(end), true) = (&page.last, page.rows.len() >= limit) {
                self.running = Some(Running {
                    next: end.clone(),
                    horizon: horizon.map(str::to_owned),
                    limit,
                    pages: None,
                });
            }
            return Ok(page);
        }
        let Some(running) = self.running.as_mut() else {
            return Err(Error::fatal("the read ahead was not started"));
        };
        let pages = running.pages.get_or_insert_with(|| {
            let (sender, pages) = mpsc::channel(QUEUED);
            tokio::spawn(read_pages(statements, after.clone(), limit, sender));
            pages
        });
        let received = pages.recv().await;
        match received {
            Some(Ok(page)) => {
                match (&page.last, page.rows.len() >= limit) {
                    (Some(end), true) => running.next = end.clone(),
                    // A page short of the limit is the read's last.
                    _ => self.running = None,
                }
                Ok(page)
            }
            Some(Err(err)) => {
                self.running = None;
                Err(err)
            }
            None => {
                self.running = None;
                Err(Error::fatal(
                    "the task reading ahead stopped without a word (see the log above)",
                ))
            }
        }
    }
}

/// The upper bound of a read, owned by the task that reads.
#[derive(Debug, Clone)]
pub(super) enum Bound {
    Horizon(Option<String>),
    Through(Position),
}

impl Bound {
    pub fn of(until: Until<'_>) -> Self {
        match until {
            Until::Horizon(horizon) => Bound::Horizon(horizon.map(str::to_owned)),
            Until::Through(end) => Bound::Through(end.clone()),
        }
    }

    pub fn until(&self) -> Until<'_> {
        match self {
            Bound::Horizon(horizon) => Until::Horizon(horizon.as_deref()),
            Bound::Through(end) => Until::Through(end),
        }
    }
}

/// A read of a driver's table up to `bound`, all that the task reading ahead needs: the
/// pool, the plan, the keyset as the driver's reads spell it, and the columns.
pub(super) struct Reads<P, C> {
    pub pool: P,
    pub plan: Arc<Plan>,
    pub keyset: Arc<Keyset>,
    pub columns: Arc<Vec<C>>,
    pub bound: Bound,
}

/// How a statement of a read ended.
pub(super) enum Ran {
    /// Read to its end; the position of its last row (`None`: it returned none).
    Ended(Option<Position>),
    /// Nobody waits for its pages any longer.
    Abandoned,
}

/// The statements of one driver's reads ahead.
pub(super) trait Statements: Send + Sync + 'static {
    /// Reads at most `rows` rows after `from` into `split`, sending each full page to `to`,
    /// or keeping them in `split` when `to` is `None`. Reads the statement's results to their
    /// end whatever happens, so that its connection goes back to the pool ready.
    fn run(
        &self,
        from: &Position,
        rows: usize,
        split: &mut Split,
        to: Option<&PageSender>,
    ) -> impl Future<Output = Result<Ran>> + Send;
}

/// Reads the pages after `from` into `to`, [`rows_per_read`] rows per statement, until a
/// statement returns fewer rows than it asked for (its rest is the last page, perhaps
/// empty) or nobody waits for the pages any longer.
pub(super) async fn read_pages(
    statements: impl Statements,
    mut from: Position,
    limit: usize,
    to: PageSender,
) {
    let per_read = rows_per_read(limit);
    loop {
        let mut split = Split::new(limit);
        let last = match statements.run(&from, per_read, &mut split, Some(&to)).await {
            Ok(Ran::Ended(last)) => last,
            Ok(Ran::Abandoned) => return,
            Err(err) => {
                let _ = to.send(Err(err)).await;
                return;
            }
        };
        match last {
            Some(last) if split.count >= per_read => from = last,
            last => {
                let last = if split.pending_rows() > 0 { last } else { None };
                split.finish(last);
                split.send(&to).await;
                return;
            }
        }
    }
}

/// The one page of at most `limit` rows after `from` (a redelivery, which must stop exactly
/// at its batch's end, reads no further).
pub(super) async fn read_page(
    statements: &impl Statements,
    from: &Position,
    limit: usize,
) -> Result<Page> {
    let mut split = Split::new(limit);
    let last = match statements.run(from, limit, &mut split, None).await? {
        Ran::Ended(last) => last,
        Ran::Abandoned => None,
    };
    if split.finished.is_empty() {
        split.finish(last);
    }
    Ok(split.finished.swap_remove(0))
}

/// Splits rows into pages of `limit` as a statement returns them.
pub(super) struct Split {
    limit: usize,
    rows: Rows,
    /// Full pages not yet sent.
    pub finished: Vec<Page>,
    /// Rows the current statement returned so far.
    pub count: usize,
}

impl Split {
    pub fn new(limit: usize) -> Self {
        Split {
            limit: limit.max(1),
            rows: Rows::with_capacity(limit),
            finished: Vec::new(),
            count: 0,
        }
    }

    /// Where the next row is rendered.
    pub fn rows(&mut self) -> &mut Rows {
        &mut self.rows
    }

    /// Whether the row just rendered fills the page; if so, call [`Split::finish`] with the
    /// position of that row.
    pub fn row_ended(&mut self) -> bool {
        self.count += 1;
        self.rows.len() >= self.limit
    }

    /// Ends the page at `last` (`None`: no row).
    pub fn finish(&mut self, last: Option<Position>) {
        let rows = std::mem::replace(&mut self.rows, Rows::with_capacity(self.limit));
        self.finished.push(Page { rows, last });
    }

    /// The rows of a page not yet finished.
    pub fn pending_rows(&self) -> usize {
        self.rows.len()
    }

    /// Sends the finished pages; false when nobody waits for them any longer.
    pub async fn send(&mut self, to: &PageSender) -> bool {
        for page in self.finished.drain(..) {
            if to.send(Ok(page)).await.is_err() {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Op, Watermark};

    fn mark(key: usize) -> Position {
        Position::After(Watermark {
            cursor: "c".into(),
            key: key.to_string(),
        })
    }

    /// A table of keys 1 to `total`, as `(c, key)` watermarks.
    struct Fake {
        total: usize,
    }

    impl Statements for Fake {
        async fn run(
            &self,
            from: &Position,
            rows: usize,
            split: &mut Split,
            to: Option<&PageSender>,
        ) -> Result<Ran> {
            let first = match from {
                Position::After(mark) => mark.key.parse::<usize>().unwrap() + 1,
                _ => 1,
            };
            let mut last = None;
            for key in (first..=self.total).take(rows) {
                split.rows().buffer().extend_from_slice(b"{}");
                split.rows().end_row(Op::Upsert);
                last = Some(mark(key));
                if split.row_ended() {
                    split.finish(last.clone());
                }
                if let Some(to) = to {
                    if !split.send(to).await {
                        return Ok(Ran::Abandoned);
                    }
                }
            }
            Ok(Ran::Ended(last))
        }
    }

    #[tokio::test]
    async fn pages_continue_only_where_the_last_one_ended() {
        let mut ahead = ReadAhead::default();
        let table = || Fake { total: 50 };
        let horizon = Until::Horizon(None);
        let first = ahead
            .read(&Position::Start, horizon, 3, table())
            .await
            .unwrap();
        assert_eq!((first.rows.len(), first.last.clone()), (3, Some(mark(3))));
        let second = ahead.read(&mark(3), horizon, 3, table()).await.unwrap();
        assert_eq!(second.last, Some(mark(6)));
        // Asked from elsewhere: a new read starts there.
        let again = ahead.read(&mark(3), horizon, 3, table()).await.unwrap();
        assert_eq!(again.last, Some(mark(6)));
        // Past the first statement's 24 rows, a second one continues; the last page is short.
        let mut at = mark(6);
        let mut ends = Vec::new();
        loop {
            let page = ahead.read(&at, horizon, 3, table()).await.unwrap();
            let short = page.rows.len() < 3;
            ends.extend(page.last.clone());
            if short {
                break;
            }
            at = page.last.unwrap();
        }
        assert_eq!(ends.last(), Some(&mark(50)));
        assert_eq!(ends.len(), 15);
        assert!(ahead.running.is_none());
        // A re-read through an end reads that page alone.
        let through = mark(9);
        let page = ahead
            .read(&mark(6), Until::Through(&through), 3, table())
            .await
            .unwrap();
        assert_eq!((page.rows.len(), page.last), (3, Some(mark(9))));
        assert!(ahead.running.is_none());
    }

    #[test]
    fn a_read_asks_for_whole_pages() {
        assert_eq!(rows_per_read(1000), 8000);
        assert_eq!(rows_per_read(0), PAGES_PER_READ);
    }
}
