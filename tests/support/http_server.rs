//! A fake HTTP/1.1 receiver on `127.0.0.1:<free port>` for the destination tests.
//!
//! It records every request (method, path, headers, body, arrival time) and answers each from
//! the test's handler: a status, headers, a body, optionally after a delay or only once the
//! test calls [`Server::release`] (a request "held" by the receiver). Plain threads and
//! blocking sockets, so that it runs the same under any test runtime and never waits on the
//! runtime the test drives the host with. Bodies sent with `Content-Length` or chunked are
//! both read; every answer has a `Content-Length`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path with query, as sent.
    pub path: String,
    /// Names lowercased, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When its head had arrived.
    pub at: Instant,
}

impl Recorded {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON; fails the test when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "{} {} has no JSON body ({err}): {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The server's answer to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Duration,
    held: bool,
}

impl Reply {
    /// An answer with `status` and an empty body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
            held: false,
        }
    }

    /// 200 with an empty body.
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    /// `status` with `body` as `application/json`.
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply::status(status)
            .header("Content-Type", "application/json")
            .body(body.to_string())
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    /// Answers only after `delay`.
    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Answers only once the test calls [`Server::release`] (or the server is dropped).
    pub fn held(mut self) -> Reply {
        self.held = true;
        self
    }
}

type Handler = Box<dyn FnMut(&Recorded) -> Reply + Send>;

struct State {
    requests: Vec<Recorded>,
    /// Answers for the next requests, in order, before the handler is asked.
    script: VecDeque<Reply>,
    handler: Handler,
    /// Requests waiting for a release right now.
    held: usize,
    /// Bumped by each release: a held request waits for it to change.
    releases: u64,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A running fake receiver; stops accepting, and lets held requests go, when dropped.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Server {
    /// A server that answers every request with what `handler` returns for it (the handler runs
    /// under the server's lock: it must not block).
    pub fn start(handler: impl FnMut(&Recorded) -> Reply + Send + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a test HTTP server");
        let addr = listener.local_addr().expect("test server address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                requests: Vec::new(),
                script: VecDeque::new(),
                handler: Box::new(handler),
                held: 0,
                releases: 0,
                closed: false,
            }),
            changed: Condvar::new(),
        });
        let accepting = Arc::clone(&shared);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.lock().closed {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let serving = Arc::clone(&accepting);
                thread::spawn(move || serve(stream, &serving));
            }
        });
        Server { addr, shared }
    }

    /// A server that answers 200 to everything.
    pub fn accepting() -> Server {
        Server::start(|_| Reply::ok())
    }

    /// A server that answers the first requests with `first`, in order, then `then` to every
    /// other.
    pub fn scripted(first: Vec<Reply>, then: Reply) -> Server {
        let server = Server::start(move |_| then.clone());
        server.push_replies(first);
        server
    }

    /// Queues answers for the next requests, ahead of the handler.
    pub fn push_replies(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().script.extend(replies);
    }

    /// Answers requests from now on with `handler`.
    pub fn set_handler(&self, handler: impl FnMut(&Recorded) -> Reply + Send + 'static) {
        self.shared.lock().handler = Box::new(handler);
    }

    /// `http://127.0.0.1:PORT`, as `--allow-host` takes it.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `origin` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// Every request so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Waits until at least `count` requests are held, at most `timeout`; fails the test
    /// otherwise.
    pub async fn wait_held(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let held = self.shared.lock().held;
            if held >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{count} requests not held within {timeout:?} ({held} held, {} received)",
                self.request_count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lets every request held right now be answered.
    pub fn release(&self) {
        self.shared.lock().releases += 1;
        self.shared.changed.notify_all();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
        // Wakes the accepting thread so that it sees `closed` and ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Serves the requests of one connection until the client closes it.
fn serve(stream: TcpStream, shared: &Shared) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader, &mut writer) {
        let reply = {
            let mut state = shared.lock();
            let reply = match state.script.pop_front() {
                Some(reply) => reply,
                None => (state.handler)(&request),
            };
            state.requests.push(request);
            if reply.held {
                state.held += 1;
                shared.changed.notify_all();
                let ticket = state.releases;
                while state.releases == ticket && !state.closed {
                    state = shared
                        .changed
                        .wait(state)
                        .unwrap_or_else(|poison| poison.into_inner());
                }
                state.held -= 1;
                if state.closed {
                    return;
                }
            }
            reply
        };
        if !reply.delay.is_zero() {
            thread::sleep(reply.delay);
        }
        if write_reply(&mut writer, &reply).is_err() {
            return;
        }
    }
}

/// Reads one request; `None` at the end of the connection or on anything unreadable.
fn read_request(reader: &mut BufReader<TcpStream>, writer: &mut TcpStream) -> Option<Recorded> {
    let mut line = String::new();
    // Blank lines before a request are allowed (RFC 9112 2.2).
    while line.trim().is_empty() {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let at = Instant::now();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    if header("expect").is_some_and(|value| value.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    let chunked = header("transfer-encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let length: usize = match header("content-length") {
            Some(length) => length.parse().ok()?,
            None => 0,
        };
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        body
    };
    Some(Recorded {
        method,
        path,
        headers,
        body,
        at,
    })
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        if reader.read_line(&mut size_line).ok()? == 0 {
            return None;
        }
        let size = size_line.trim().split(';').next()?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer).ok()? == 0 || trailer.trim().is_empty() {
                    return Some(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).ok()?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf).ok()?;
    }
}

fn write_reply(writer: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
    writer.write_all(head.as_bytes())?;
    writer.write_all(&reply.body)?;
    writer.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
