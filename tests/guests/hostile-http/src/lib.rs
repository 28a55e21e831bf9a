//! Test guest: a destination that abuses outbound HTTP, as `--set mode=…` says:
//!
//! - `hang`: POSTs to `url` and waits for an answer that never comes;
//! - `huge-body`: writes the same buffer to one request's body, forever;
//! - `flood`: sends GETs to `url` one after the other, forever, ignoring failures;
//! - `hoard`: starts GETs to `url` and keeps every response body open and unread, forever;
//! - `secret-url`: puts its secret `api_key` into request URLs (a query to an origin that is
//!   not allowed, a path to `closed`, where nothing listens, user info), logs them and fails
//!   with them, so the host must mask it everywhere.

use std::io::Write;
use std::time::{Duration, SystemTime};

use tidemark_sdk::destination::wasi::http::outgoing_handler;
use tidemark_sdk::destination::wasi::http::types::{
    Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use tidemark_sdk::http::Request;
use tidemark_sdk::{config, log, require_config, Batch, Error, Rejection};

fn deliver(_batch: Batch) -> Result<Vec<Rejection>, Error> {
    let fatal = |message: String| Error::Fatal(message);
    match config("mode").as_deref() {
        Some("hang") => {
            let url = require_config("url")?;
            let response = Request::post(&url).body("{}").send()?;
            Err(fatal(format!("the receiver answered {}", response.status)))
        }
        Some("huge-body") => huge_body(),
        Some("flood") => flood(),
        Some("hoard") => hoard(),
        Some("secret-url") => secret_url(),
        other => Err(fatal(format!("unknown mode {other:?}"))),
    }
}

/// `url` split for a raw request: scheme, authority, path with query.
fn target() -> Result<(Scheme, String, String), Error> {
    let url = require_config("url")?;
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", &url));
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let slash = rest.find('/').unwrap_or(rest.len());
    let path = if slash == rest.len() {
        "/"
    } else {
        &rest[slash..]
    };
    Ok((scheme, rest[..slash].to_owned(), path.to_owned()))
}

fn raw_request(method: Method) -> Result<OutgoingRequest, Error> {
    let (scheme, authority, path) = target()?;
    let request = OutgoingRequest::new(Fields::new());
    let invalid = |()| Error::Fatal("invalid request".into());
    request.set_method(&method).map_err(invalid)?;
    request.set_scheme(Some(&scheme)).map_err(invalid)?;
    request.set_authority(Some(&authority)).map_err(invalid)?;
    request.set_path_with_query(Some(&path)).map_err(invalid)?;
    Ok(request)
}

fn huge_body() -> Result<Vec<Rejection>, Error> {
    let request = raw_request(Method::Post)?;
    let body = request
        .body()
        .map_err(|()| Error::Fatal("no body".into()))?;
    let pending = outgoing_handler::handle(request, None)
        .map_err(|code| Error::Fatal(format!("{code:?}")))?;
    let buffer = vec![b'x'; 64 << 10];
    let mut written: u64 = 0;
    {
        let stream = body
            .write()
            .map_err(|()| Error::Fatal("no body stream".into()))?;
        loop {
            let Ok(room) = stream.check_write() else {
                break;
            };
            if room == 0 {
                stream.subscribe().block();
                continue;
            }
            let length = buffer.len().min(room as usize);
            if stream.write(&buffer[..length]).is_err() {
                break;
            }
            written += length as u64;
        }
    }
    drop(body);
    pending.subscribe().block();
    let result = pending.get();
    Err(Error::RetryLater {
        message: format!("the host stopped the body after {written} bytes: {result:?}"),
        after: None,
    })
}

fn flood() -> Result<Vec<Rejection>, Error> {
    let url = require_config("url")?;
    // One number per call, so the receiver can count each call's requests.
    let call = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or(0);
    for n in 0.. {
        let _ = Request::get(format!("{url}?call={call}&n={n}")).send();
    }
    unreachable!()
}

fn hoard() -> Result<Vec<Rejection>, Error> {
    let mut kept: Vec<(IncomingResponse, IncomingBody)> = Vec::new();
    loop {
        let request = raw_request(Method::Get)?;
        let body = request
            .body()
            .map_err(|()| Error::Fatal("no body".into()))?;
        let pending = outgoing_handler::handle(request, None)
            .map_err(|code| Error::Fatal(format!("{code:?}")))?;
        OutgoingBody::finish(body, None).map_err(|code| Error::Fatal(format!("{code:?}")))?;
        pending.subscribe().block();
        let Some(Ok(Ok(response))) = pending.get() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Ok(body) = response.consume() else {
            continue;
        };
        kept.push((response, body));
        log::debug(format!("holding {} unread response bodies", kept.len()));
    }
}

fn secret_url() -> Result<Vec<Rejection>, Error> {
    let secret = require_config("api_key")?;
    let closed = require_config("closed")?;
    let denied = format!("https://not-allowed.example/hook?api_key={secret}");
    let userinfo = format!("https://user:{secret}@not-allowed.example/");
    let refused = format!("{closed}/path/{secret}");
    for url in [&denied, &userinfo, &refused] {
        if let Err(err) = Request::get(url.as_str()).send() {
            log::warn(format!("request to {url} failed: {err}"));
        }
    }
    // A long line whose secret straddles the host's cut into 8 KiB pieces, at every place:
    // 8 KiB ending in the secret's start, then its rest.
    let mut stderr = std::io::stderr();
    for split in 1..secret.len() {
        let mut first = vec![b'x'; (8 << 10) - split];
        first.extend_from_slice(&secret.as_bytes()[..split]);
        let _ = stderr.write_all(&first);
        let _ = stderr.flush();
        let _ = writeln!(stderr, "{}", &secret[split..]);
    }
    eprintln!("the key is {secret}");
    let err = Request::get(refused.as_str()).send().err().map(Error::from);
    Err(err.unwrap_or_else(|| Error::Fatal(format!("{refused} answered"))))
}

tidemark_sdk::destination!(deliver);
