//! A small blocking HTTP client over `wasi:http`, for destinations.
//!
//! The host lets a destination reach only the origins allowed for its pipeline; any other
//! request fails with [`HttpError::Denied`].
//!
//! Most destinations answer the host the same way whatever system they deliver to: `?` turns
//! an [`HttpError`] into the [`Error`] the host expects (retry later when the request got no
//! response, fatal when the host refused it), and [`Response::error`] does the same for a
//! response that is not a success (retry later for 408, 429 and 5xx, honouring
//! `Retry-After`; fatal for 3xx and other 4xx).
//!
//! ```no_run
//! use tidemark_sdk::http::Request;
//! use tidemark_sdk::{Batch, Rejection, Result};
//!
//! fn deliver(batch: Batch) -> Result<Vec<Rejection>> {
//!     let url = "https://api.example.com/rows";
//!     let response = Request::post(url)
//!         .header("idempotency-key", &batch.id)
//!         .json(&batch.changes)?
//!         .send()?;
//!     if !response.is_success() {
//!         return Err(response.error(url, &response.body_excerpt(200)));
//!     }
//!     Ok(Vec::new())
//! }
//! # tidemark_sdk::destination!(deliver);
//! ```

use std::time::{Duration, SystemTime};

use base64::Engine as _;

use crate::Error;

use crate::destination::wasi::http::outgoing_handler;
use crate::destination::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::destination::wasi::io::streams::StreamError;

/// An HTTP request; build it with [`Request::post`] or [`Request::get`], send it with
/// [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// The response: status, headers and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Why a request got no response. `?` turns it into the [`Error`] it means for the batch:
/// fatal when sending it again cannot succeed ([`HttpError::Invalid`], [`HttpError::Denied`],
/// [`HttpError::AddressProhibited`]), retry later otherwise ([`HttpError::Transport`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The request cannot be made as given: a URL without a scheme or host, a header or a
    /// body the host refuses, a response body that is not the JSON asked for.
    Invalid { url: String, message: String },
    /// The host refused the request: its origin is not on the pipeline's allow-list
    /// (`--allow-host`).
    Denied { url: String },
    /// The host name resolved to a loopback, private or link-local address, which only an
    /// `--allow-host` origin naming that IP address may reach.
    AddressProhibited { url: String },
    /// Sent, but no whole response came: the connection was refused or reset, a timeout, a
    /// body over the host's caps.
    Transport { url: String, message: String },
}

impl HttpError {
    /// The URL of the request.
    pub fn url(&self) -> &str {
        match self {
            HttpError::Invalid { url, .. }
            | HttpError::Denied { url }
            | HttpError::AddressProhibited { url }
            | HttpError::Transport { url, .. } => url,
        }
    }

    /// Whether the host refused the request (its origin or address is not allowed).
    pub fn is_denied(&self) -> bool {
        matches!(
            self,
            HttpError::Denied { .. } | HttpError::AddressProhibited { .. }
        )
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Invalid { url, message } => write!(f, "request to {url}: {message}"),
            HttpError::Denied { url } => write!(
                f,
                "the host refused the request to {url}: its origin must be allowed with \
                 --allow-host {}",
                origin(url).unwrap_or(url)
            ),
            HttpError::AddressProhibited { url } => write!(
                f,
                "the host refused the request to {url}: its host name resolves to a loopback \
                 or private address, which must be allowed by IP address: \
                 --allow-host <scheme>://<IP address>[:port]"
            ),
            HttpError::Transport { url, message } => {
                write!(f, "request to {url} failed: {message}")
            }
        }
    }
}

impl std::error::Error for HttpError {}

/// What a request that got no response means for the batch.
impl From<HttpError> for Error {
    fn from(err: HttpError) -> Self {
        match err {
            HttpError::Transport { .. } => Error::retry_later(err.to_string()),
            HttpError::Invalid { .. }
            | HttpError::Denied { .. }
            | HttpError::AddressProhibited { .. } => Error::fatal(err.to_string()),
        }
    }
}

impl Request {
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }

    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::Put, url)
    }

    pub fn delete(url: impl Into<String>) -> Self {
        Self::new(Method::Delete, url)
    }

    /// The URL the request goes to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sets `Authorization: Basic …` from a user name and password (RFC 7617).
    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        let value = basic_auth_value(user, password);
        self.header("authorization", value)
    }

    /// Sets `Authorization: Bearer <token>` (RFC 6750).
    pub fn bearer_auth(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.into().to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the body to `value` as JSON, with its content type.
    pub fn json<T: serde::Serialize>(self, value: &T) -> Result<Self, HttpError> {
        let body = serde_json::to_vec(value)
            .map_err(|err| invalid(&self.url, format!("JSON body: {err}")))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Sends the request and waits for the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        receive(self.start()?)
    }

    /// Sends the request and its body; the response is awaited by [`receive`].
    fn start(self) -> Result<Sent, HttpError> {
        let url = self.url.as_str();
        let (scheme, authority, path) = split_url(url)?;
        let headers = Fields::from_list(&self.headers)
            .map_err(|err| invalid(url, format!("invalid header: {err:?}")))?;
        let request = OutgoingRequest::new(headers);
        let invalid = |what: &str| invalid(url, format!("invalid {what}"));
        request
            .set_method(&self.method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(path))
            .map_err(|()| invalid("path"))?;
        let unavailable = || transport(url, "request body unavailable");
        let body = request.body().map_err(|()| unavailable())?;
        // The request goes out before its body is written, so a large body streams.
        let pending =
            outgoing_handler::handle(request, None).map_err(|code| from_error_code(url, code))?;
        let sent = Sent {
            url: self.url.clone(),
            pending,
        };
        let written = {
            let stream = body.write().map_err(|()| unavailable())?;
            self.body
                .chunks(4096)
                .try_for_each(|chunk| stream.blocking_write_and_flush(chunk))
        };
        if let Err(err) = written {
            // The host stopped taking the body (e.g. it is over the host's cap): its reason
            // is the request's result.
            drop(body);
            return Err(match receive_head(&sent) {
                Err(reason) => reason,
                Ok(_) => transport(url, format!("sending the body: {err:?}")),
            });
        }
        OutgoingBody::finish(body, None).map_err(|code| from_error_code(url, code))?;
        Ok(sent)
    }
}

/// A request on its way, with its URL for the errors that may come.
struct Sent {
    url: String,
    pending: FutureIncomingResponse,
}

/// Sends every request before waiting for any response, so that they are in flight together
/// (up to the pipeline's `--max-in-flight`; the host queues the rest). The results come in the
/// order of `requests`.
pub fn send_all(requests: Vec<Request>) -> Vec<Result<Response, HttpError>> {
    let started: Vec<_> = requests.into_iter().map(Request::start).collect();
    started
        .into_iter()
        .map(|pending| pending.and_then(receive))
        .collect()
}

/// Waits for a response's head.
fn receive_head(
    sent: &Sent,
) -> Result<crate::destination::wasi::http::types::IncomingResponse, HttpError> {
    let url = sent.url.as_str();
    sent.pending.subscribe().block();
    sent.pending
        .get()
        .ok_or_else(|| transport(url, "no response"))?
        .map_err(|()| transport(url, "response already taken"))?
        .map_err(|code| from_error_code(url, code))
}

/// Waits for a response and reads its whole body.
fn receive(sent: Sent) -> Result<Response, HttpError> {
    let url = sent.url.as_str();
    let response = receive_head(&sent)?;
    let status = response.status();
    let headers = response.headers().entries();
    let unavailable = || transport(url, "response body unavailable");
    let incoming = response.consume().map_err(|()| unavailable())?;
    let mut body = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| unavailable())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(err) => return Err(transport(url, format!("reading the body: {err:?}"))),
            }
        }
    }
    drop(incoming);
    Ok(Response {
        status,
        headers,
        body,
    })
}

impl Response {
    /// The first value of header `name` (case-insensitive) as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// The body as JSON; a body that is not is a fatal error.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> crate::Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|err| Error::fatal(format!("response JSON (HTTP {}): {err}", self.status)))
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// What the status means for the batch: see [`Disposition::of`].
    pub fn disposition(&self) -> Disposition {
        Disposition::of(self.status)
    }

    /// How long the server asked to wait (`Retry-After`, in seconds or as an HTTP date), in
    /// milliseconds.
    pub fn retry_after_ms(&self) -> Option<u64> {
        parse_retry_after(self.header("retry-after")?, SystemTime::now())
    }

    /// The start of the body as text, for error messages: at most `max_chars` characters,
    /// whitespace runs collapsed, `…` when cut.
    pub fn body_excerpt(&self, max_chars: usize) -> String {
        excerpt(&String::from_utf8_lossy(&self.body), max_chars)
    }

    /// How long the server asked to wait (`Retry-After`, in seconds or as an HTTP date).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after_ms().map(Duration::from_millis)
    }

    /// The [`Error`] a response that is not a success means: retry later for 408, 429 and
    /// 5xx (after `Retry-After` when the server sent one), fatal for anything else. The
    /// message names `what` was requested, the status and `detail` (e.g. a
    /// [`Response::body_excerpt`]).
    pub fn error(&self, what: &str, detail: &str) -> Error {
        let message = if detail.is_empty() {
            format!("{what}: HTTP {}", self.status)
        } else {
            format!("{what}: HTTP {}: {detail}", self.status)
        };
        match self.disposition() {
            Disposition::RetryLater => Error::RetryLater {
                message,
                after: self.retry_after(),
            },
            Disposition::Delivered | Disposition::Fatal => Error::Fatal(message),
        }
    }
}

/// What an HTTP status means for a batch sent to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// 2xx: the batch arrived.
    Delivered,
    /// 408, 429 and 5xx: a temporary failure, worth sending the same batch again.
    RetryLater,
    /// Anything else (1xx, 3xx, other 4xx): sending the same request again would fail again.
    /// Redirects are never followed by the host, so they land here too.
    Fatal,
}

impl Disposition {
    pub fn of(status: u16) -> Disposition {
        match status {
            200..=299 => Disposition::Delivered,
            408 | 429 | 500..=599 => Disposition::RetryLater,
            _ => Disposition::Fatal,
        }
    }
}

/// A `Retry-After` value (RFC 9110: delay in seconds, or an HTTP date) as milliseconds from
/// `now`; a date in the past is 0, an unreadable value `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
    Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
}

/// The value of an `Authorization` header for basic authentication.
pub fn basic_auth_value(user: &str, password: &str) -> String {
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {credentials}")
}

/// `scheme://host[:port]` of a URL, as `--allow-host` takes it.
pub fn origin(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    (end > 0).then(|| &url[..url.len() - rest.len() + end])
}

fn excerpt(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut words = text.split_whitespace();
    let mut count = 0;
    for word in words.by_ref() {
        let sep = usize::from(!out.is_empty());
        if count + sep + word.chars().count() > max_chars {
            let room = max_chars.saturating_sub(count + sep);
            if room > 0 {
                if sep == 1 {
                    out.push(' ');
                }
                out.extend(word.chars().take(room));
            }
            out.push('…');
            return out;
        }
        if sep == 1 {
            out.push(' ');
        }
        out.push_str(word);
        count += sep + word.chars().count();
    }
    out
}

fn invalid(url: &str, message: impl Into<String>) -> HttpError {
    HttpError::Invalid {
        url: url.to_owned(),
        message: message.into(),
    }
}

fn transport(url: &str, message: impl Into<String>) -> HttpError {
    HttpError::Transport {
        url: url.to_owned(),
        message: message.into(),
    }
}

fn from_error_code(url: &str, code: ErrorCode) -> HttpError {
    let url = url.to_owned();
    let message = match &code {
        ErrorCode::HttpRequestDenied => return HttpError::Denied { url },
        ErrorCode::DestinationIpProhibited => return HttpError::AddressProhibited { url },
        ErrorCode::HttpRequestBodySize(Some(max)) => {
            format!("the request body is over the host's cap of {max} bytes (--max-request-size)")
        }
        ErrorCode::HttpResponseBodySize(_) => {
            format!("the response body is over the host's cap (--max-response-size): {code:?}")
        }
        ErrorCode::InternalError(Some(message)) => message.clone(),
        other => format!("{other:?}"),
    };
    HttpError::Transport { url, message }
}

/// `https://host:port/path?query` into its scheme, authority and path with query.
fn split_url(url: &str) -> Result<(Scheme, &str, &str), HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid(url, "the URL has no scheme"))?;
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => Scheme::Other(other.to_owned()),
    };
    let slash = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(slash);
    if authority.is_empty() {
        return Err(invalid(url, "the URL has no host"));
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_delivered_retried_or_fatal() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(Disposition::of(status), Disposition::Delivered, "{status}");
        }
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(Disposition::of(status), Disposition::RetryLater, "{status}");
        }
        for status in [100, 301, 302, 307, 400, 401, 403, 404, 409, 422] {
            assert_eq!(Disposition::of(status), Disposition::Fatal, "{status}");
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(120_000));
        assert_eq!(parse_retry_after(" 0 ", now), Some(0));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now),
            Some(5_000)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(0)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn basic_auth_is_base64_of_user_and_password() {
        assert_eq!(
            basic_auth_value("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn origin_of_a_url() {
        assert_eq!(
            origin("https://us6.api.mailchimp.com/3.0/lists/x"),
            Some("https://us6.api.mailchimp.com")
        );
        assert_eq!(
            origin("http://127.0.0.1:8080?x=1"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin("http://host"), Some("http://host"));
        assert_eq!(origin("no-scheme/path"), None);
        assert_eq!(origin("http:///path"), None);
    }

    #[test]
    fn excerpts_collapse_whitespace_and_cut() {
        assert_eq!(excerpt("  a\n  b\tc ", 10), "a b c");
        assert_eq!(excerpt("hello world", 8), "hello wo…");
        assert_eq!(excerpt("hello world", 5), "hello…");
        assert_eq!(excerpt("", 5), "");
    }

    #[test]
    fn failed_responses_and_requests_become_errors() {
        let response = |status, headers: &[(&str, &str)]| Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: b"busy".to_vec(),
        };
        assert_eq!(
            response(503, &[("Retry-After", "2")]).error("POST u", "busy"),
            Error::RetryLater {
                message: "POST u: HTTP 503: busy".into(),
                after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            response(400, &[]).error("POST u", ""),
            Error::Fatal("POST u: HTTP 400".into())
        );
        let denied = HttpError::Denied {
            url: "https://a.example:8443/x".into(),
        };
        assert!(denied.is_denied());
        match Error::from(denied) {
            Error::Fatal(message) => {
                assert!(
                    message.contains("--allow-host https://a.example:8443"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        let loopback = HttpError::AddressProhibited {
            url: "http://localhost:8080/x".into(),
        };
        match Error::from(loopback) {
            Error::Fatal(message) => {
                assert!(message.contains("by IP address"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let refused = transport("http://x/", "ConnectionRefused");
        assert!(!refused.is_denied());
        assert_eq!(
            Error::from(refused),
            Error::retry_later("request to http://x/ failed: ConnectionRefused")
        );
        assert!(matches!(
            Error::from(invalid("x", "the URL has no scheme")),
            Error::Fatal(_)
        ));
    }
}
