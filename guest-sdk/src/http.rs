//! A small blocking HTTP client over `wasi:http`, for destinations.
//!
//! The host lets a destination reach only the origins allowed for its pipeline; any other
//! request fails with [`HttpError::denied`] set.

use crate::destination::wasi::http::outgoing_handler;
use crate::destination::wasi::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme,
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

/// Why a request got no response.
#[derive(Debug, Clone)]
pub struct HttpError {
    pub message: String,
    /// The host refused the request: its origin is not on the pipeline's allow-list.
    pub denied: bool,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
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
        let body = serde_json::to_vec(value).map_err(|err| failure(format!("JSON body: {err}")))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    pub fn send(self) -> Result<Response, HttpError> {
        let (scheme, authority, path) = split_url(&self.url)?;
        let headers = Fields::from_list(&self.headers)
            .map_err(|err| failure(format!("invalid header: {err:?}")))?;
        let request = OutgoingRequest::new(headers);
        let invalid = |what: &str| failure(format!("invalid {what} in {:?}", self.url));
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
        let body = request
            .body()
            .map_err(|()| failure("request body unavailable"))?;
        // The request goes out before its body is written, so a large body streams.
        let pending = outgoing_handler::handle(request, None).map_err(from_error_code)?;
        {
            let stream = body
                .write()
                .map_err(|()| failure("request body unavailable"))?;
            for chunk in self.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|err| failure(format!("sending the body: {err:?}")))?;
            }
        }
        OutgoingBody::finish(body, None).map_err(from_error_code)?;
        pending.subscribe().block();
        let response = pending
            .get()
            .ok_or_else(|| failure("no response"))?
            .map_err(|()| failure("response already taken"))?
            .map_err(from_error_code)?;
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response
            .consume()
            .map_err(|()| failure("response body unavailable"))?;
        let mut body = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|()| failure("response body unavailable"))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(err) => return Err(failure(format!("reading the body: {err:?}"))),
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
}

impl Response {
    /// The first value of header `name` (case-insensitive) as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|err| failure(format!("response JSON: {err}")))
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn failure(message: impl Into<String>) -> HttpError {
    HttpError {
        message: message.into(),
        denied: false,
    }
}

fn from_error_code(code: ErrorCode) -> HttpError {
    HttpError {
        denied: matches!(code, ErrorCode::HttpRequestDenied),
        message: format!("{code:?}"),
    }
}

/// `https://host:port/path?query` into its scheme, authority and path with query.
fn split_url(url: &str) -> Result<(Scheme, &str, &str), HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| failure(format!("URL {url:?} has no scheme")))?;
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => Scheme::Other(other.to_owned()),
    };
    let slash = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(slash);
    if authority.is_empty() {
        return Err(failure(format!("URL {url:?} has no host")));
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}
