//! Where a module's log lines go: its `log` calls, stdout and stderr reach the host's log
//! tagged with the module and pipeline, its secrets masked, then its control characters
//! escaped, then cut into lines, within a budget per call (`--max-log-lines`,
//! `--max-log-bytes`); what the budget drops is said once, at the end of the call.

use std::sync::{Arc, Mutex};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::runtime::contract::bindings::Level;
use crate::runtime::module_config::Tag;
use crate::runtime::sched::limits::Limits;
use crate::runtime::text::{escape_guest_prefix, prefix_at_most};

/// A log line longer than this is logged in pieces, each counted as a line.
const MAX_LINE: usize = 8 << 10;

/// One call's log: the host interface's `log`, stdout and stderr, sharing one budget.
pub(in crate::runtime) struct CallLog {
    log: GuestLog,
    pub(in crate::runtime) stdout: LogSink,
    pub(in crate::runtime) stderr: LogSink,
}

impl CallLog {
    pub(in crate::runtime) fn new(tag: Tag, limits: &Limits) -> Self {
        let log = GuestLog::new(tag, limits);
        CallLog {
            stdout: LogSink::new(log.clone(), Level::Info),
            stderr: LogSink::new(log.clone(), Level::Warn),
            log,
        }
    }

    /// One message of the host interface's `log`.
    pub(in crate::runtime) fn write(&self, level: Level, message: &str) {
        self.log.write(level, message);
    }

    /// The call is over: a last line without a newline is logged, and what the budget
    /// dropped is said once.
    pub(in crate::runtime) fn finish(&self) {
        self.stdout.finish();
        self.stderr.finish();
        self.log.report_dropped();
    }
}

/// How much one call may still log: the host interface's `log`, stdout and stderr together.
#[derive(Debug, Default)]
struct LogBudget {
    max_lines: u64,
    max_bytes: u64,
    lines: u64,
    bytes: u64,
    dropped_lines: u64,
    dropped_bytes: u64,
}

impl LogBudget {
    /// Whether a line of `len` bytes may still be written; once one is refused, every later
    /// line is too, so that what was dropped is one tail of the call's log.
    fn take(&mut self, len: usize) -> bool {
        let len = len as u64;
        if self.dropped_lines == 0
            && self.lines < self.max_lines
            && self.bytes.saturating_add(len) <= self.max_bytes
        {
            self.lines += 1;
            self.bytes += len;
            return true;
        }
        self.drop_lines(1, len);
        false
    }

    fn drop_lines(&mut self, lines: u64, bytes: u64) {
        self.dropped_lines = self.dropped_lines.saturating_add(lines);
        self.dropped_bytes = self.dropped_bytes.saturating_add(bytes);
    }

    fn exhausted(&self) -> bool {
        self.dropped_lines > 0
    }
}

/// Where a module's log lines go: the host log, tagged with the module and pipeline, with its
/// secrets masked, control characters escaped and the call's budget applied, in that order.
#[derive(Clone)]
struct GuestLog {
    tag: Tag,
    budget: Arc<Mutex<LogBudget>>,
    /// The longest secret, in bytes: the tail of an unfinished line that is kept back so that
    /// a secret written in two pieces is still masked.
    longest_secret: usize,
}

impl GuestLog {
    fn new(tag: Tag, limits: &Limits) -> Self {
        let longest_secret = tag.config.secrets.values().map(String::len).max();
        GuestLog {
            tag,
            budget: Arc::new(Mutex::new(LogBudget {
                max_lines: limits.log_lines,
                max_bytes: limits.log_bytes,
                ..LogBudget::default()
            })),
            longest_secret: longest_secret.unwrap_or(0),
        }
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, LogBudget> {
        // A panic while holding it cannot leave the counters inconsistent.
        self.budget
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// One message of the host interface's `log`: one line, its newlines escaped.
    fn write(&self, level: Level, message: &str) {
        if self.budget().exhausted() {
            self.budget().drop_lines(1, message.len() as u64);
            return;
        }
        self.write_redacted(level, &self.tag.config.redact(message));
    }

    /// Complete lines of stdout or stderr, each ending in `\n`: masked together (a secret
    /// cannot hide across a cut), then logged line by line.
    fn write_lines(&self, level: Level, bytes: &[u8]) {
        if self.budget().exhausted() {
            let lines = bytes
                .split(|&b| b == b'\n')
                .filter(|line| !line.is_empty())
                .count();
            self.budget().drop_lines(lines as u64, bytes.len() as u64);
            return;
        }
        let text = self.tag.config.redact(&String::from_utf8_lossy(bytes));
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if !line.is_empty() {
                self.write_redacted(level, line);
            }
        }
    }

    /// A line with its secrets already masked: escaped and cut into pieces of at most
    /// [`MAX_LINE`] bytes a piece at a time, each logged while the budget lasts, so that a huge
    /// message costs no more than the pieces that are shown.
    fn write_redacted(&self, level: Level, line: &str) {
        let mut rest = line;
        while !rest.is_empty() {
            let (piece, used) = escape_guest_prefix(rest, MAX_LINE);
            rest = &rest[used..];
            if !self.budget().take(piece.len()) {
                self.budget().drop_lines(0, rest.len() as u64);
                return;
            }
            emit(&self.tag, level, &piece);
        }
    }

    /// Says once, at the end of a call, how much its log budget dropped.
    fn report_dropped(&self) {
        let budget = self.budget();
        if budget.dropped_lines == 0 {
            return;
        }
        let (module, pipeline) = (&*self.tag.module, &*self.tag.pipeline);
        tracing::warn!(
            module,
            pipeline,
            "module {module} dropped {} log lines ({} bytes) of this call, past its log budget \
             of {} lines or {} bytes per call; raise --max-log-lines or --max-log-bytes to keep \
             more",
            budget.dropped_lines,
            budget.dropped_bytes,
            budget.max_lines,
            budget.max_bytes,
        );
    }
}

/// Writes one finished line (masked, escaped, cut) to the host log.
fn emit(tag: &Tag, level: Level, message: &str) {
    let (module, pipeline) = (&*tag.module, &*tag.pipeline);
    match level {
        Level::Trace => tracing::trace!(module, pipeline, "{message}"),
        Level::Debug => tracing::debug!(module, pipeline, "{message}"),
        Level::Info => tracing::info!(module, pipeline, "{message}"),
        Level::Warn => tracing::warn!(module, pipeline, "{message}"),
        Level::Error => tracing::error!(module, pipeline, "{message}"),
    }
}

/// A guest's stdout or stderr: complete lines go to the host log, tagged. Never reports the
/// stream closed, because a Rust guest panics when a write to stdout fails.
#[derive(Clone)]
pub(in crate::runtime) struct LogSink {
    log: GuestLog,
    level: Level,
    pending: Arc<Mutex<Vec<u8>>>,
}

impl LogSink {
    fn new(log: GuestLog, level: Level) -> Self {
        LogSink {
            log,
            level,
            pending: Arc::default(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn push(&self, bytes: &[u8]) {
        let mut pending = self.pending();
        pending.extend_from_slice(bytes);
        // Every complete line at once: one pass, whatever the number of lines in a write.
        if let Some(last) = pending.iter().rposition(|&b| b == b'\n') {
            let complete: Vec<u8> = pending.drain(..=last).collect();
            self.log.write_lines(self.level, &complete);
        }
        if pending.len() >= MAX_LINE {
            self.cut_long_line(&mut pending);
        }
    }

    /// An unfinished line past [`MAX_LINE`]: logged but for a tail as long as the longest
    /// secret, so that a secret whose end has not been written yet is masked when it is.
    fn cut_long_line(&self, pending: &mut Vec<u8>) {
        if self.log.budget().exhausted() {
            self.log.budget().drop_lines(1, pending.len() as u64);
            pending.clear();
            return;
        }
        // An incomplete character at the end waits for its last bytes.
        let valid = match std::str::from_utf8(pending) {
            Ok(_) => pending.len(),
            Err(err) if err.error_len().is_none() => err.valid_up_to(),
            Err(_) => pending.len(),
        };
        let text = self
            .log
            .tag
            .config
            .redact(&String::from_utf8_lossy(&pending[..valid]));
        let keep = self.log.longest_secret.saturating_sub(1);
        let cut = match prefix_at_most(&text, text.len().saturating_sub(keep)).len() {
            0 => text.len(),
            cut => cut,
        };
        self.log.write_redacted(self.level, &text[..cut]);
        let mut rest = text.as_bytes()[cut..].to_vec();
        rest.extend_from_slice(&pending[valid..]);
        *pending = rest;
    }

    /// The call is over: what is left of a last line without a newline is logged.
    fn finish(&self) {
        let mut pending = self.pending();
        if !pending.is_empty() {
            let rest = std::mem::take(&mut *pending);
            self.log.write_lines(self.level, &rest);
        }
    }
}

impl IsTerminal for LogSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogSink {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogSink {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogSink {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for LogSink {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the host log received while `run` ran, one string per line.
    fn captured(run: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn call(secret: &str, log_lines: u64, log_bytes: u64) -> CallLog {
        let mut config = crate::runtime::ModuleConfig::default();
        config.secrets.insert("token".into(), secret.into());
        let tag = Tag {
            module: "guest".into(),
            pipeline: "p".into(),
            config: Arc::new(config),
        };
        let limits = Limits {
            log_lines,
            log_bytes,
            ..Limits::default()
        };
        CallLog::new(tag, &limits)
    }

    #[test]
    fn guest_lines_are_masked_escaped_and_cannot_start_a_host_line() {
        let lines = captured(|| {
            let state = call("s3cr3t-token", 100, 1 << 20);
            // A secret written in two pieces, lines split across writes and many in one.
            state.stdout.push(b"first s3cr");
            state
                .stdout
                .push(b"3t-token line\nsecond\r\nthird\x1b[2J\n");
            state
                .log
                .write(Level::Info, "log\n2026-01-01T00:00:00Z  INFO forged");
            state.stderr.push(b"no newline at the end");
            state.finish();
        });
        let messages: Vec<&str> = lines
            .iter()
            .map(|line| {
                let line = line.trim_start();
                line.split_once(' ')
                    .map_or("", |(_, rest)| rest.trim_start())
            })
            .collect();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(messages[0].starts_with("first *** line "), "{lines:#?}");
        assert!(messages[1].starts_with("second "), "{lines:#?}");
        assert!(messages[2].starts_with("third\\x1b[2J "), "{lines:#?}");
        assert!(
            messages[3].starts_with("log\\n2026-01-01T00:00:00Z  INFO forged "),
            "{lines:#?}"
        );
        assert!(lines[4].contains("WARN"), "{lines:#?}");
        assert!(
            messages[4].starts_with("no newline at the end"),
            "{lines:#?}"
        );
        assert!(lines.iter().all(|line| !line.contains("s3cr")));
    }

    #[test]
    fn a_long_unfinished_line_is_cut_without_showing_a_secret() {
        let secret = "0123456789-secret";
        let lines = captured(|| {
            let state = call(secret, 100, 1 << 20);
            let mut text = "x".repeat(MAX_LINE - 5).into_bytes();
            text.extend_from_slice(&secret.as_bytes()[..8]);
            state.stdout.push(&text);
            state.stdout.push(&secret.as_bytes()[8..]);
            state.stdout.push(b" end\n");
            state.finish();
        });
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[1].contains("*** end"), "{lines:#?}");
        assert!(
            lines.iter().all(|line| !line.contains("0123")),
            "{lines:#?}"
        );
    }

    #[test]
    fn past_the_budget_lines_are_dropped_and_counted_once() {
        let lines = captured(|| {
            let state = call("unused-secret", 3, 1 << 20);
            for n in 0..10 {
                state.write(Level::Info, &format!("line {n}"));
            }
            state.stdout.push(b"a\nb\nc\n");
            state.finish();
        });
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[2].contains("line 2"));
        assert!(
            lines[3].contains("dropped 10 log lines (")
                && lines[3].contains("budget of 3 lines or 1048576 bytes")
                && lines[3].contains("--max-log-lines or --max-log-bytes"),
            "{lines:#?}"
        );
        // Bytes count too: a 10-byte budget takes the first line, then nothing.
        let lines = captured(|| {
            let state = call("unused-secret", 100, 10);
            state.write(Level::Info, "12345678");
            state.write(Level::Info, "123");
            state.write(Level::Info, "1");
            state.finish();
        });
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines[1].contains("dropped 2 log lines (4 bytes)"),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_quiet_call_says_nothing_of_its_budget() {
        let lines = captured(|| {
            let state = call("unused-secret", 3, 1 << 20);
            state.write(Level::Info, "one");
            state.finish();
        });
        assert_eq!(lines.len(), 1, "{lines:#?}");
    }
}
