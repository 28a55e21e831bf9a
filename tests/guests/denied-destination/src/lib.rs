//! Test guest: a destination that tries to reach the network (the host refuses, as no origin
//! is allowed), rejects every delete, and accepts the rest. With `--config mode=retry` or
//! `mode=fatal` it fails the whole batch that way instead; with `mode=panic` it panics, as a
//! module that unwraps the response would; with `mode=init` its `init` tries the receiver and
//! refuses to start without an answer.

use tidemark_sdk::http::Request;
use tidemark_sdk::{log, Batch, Error, Rejection};

fn init() -> Result<(), Error> {
    if tidemark_sdk::config("mode").as_deref() != Some("init") {
        return Ok(());
    }
    Request::get("https://example.com/")
        .send()
        .map(drop)
        .map_err(|err| Error::Fatal(format!("cannot reach the receiver: {err}")))
}

fn deliver(batch: Batch) -> Result<Vec<Rejection>, Error> {
    match Request::get("https://example.com/").send() {
        Ok(response) => log::warn(format!("unexpected response {}", response.status)),
        Err(err) if err.is_denied() => log::info(format!("request denied as expected: {err}")),
        Err(err) => log::warn(format!("request failed otherwise: {err}")),
    }
    match tidemark_sdk::config("mode").as_deref() {
        Some("retry") => Err(Error::RetryLater {
            message: "receiver busy".into(),
            after: Some(std::time::Duration::from_millis(10)),
        }),
        Some("fatal") => Err(Error::Fatal("bad credentials".into())),
        Some("panic") => panic!("no response from the receiver"),
        _ => Ok(batch
            .changes
            .iter()
            .enumerate()
            .filter(|(_, change)| change.is_delete())
            .map(|(index, _)| Rejection {
                index: index as u32,
                reason: "deletes are not accepted".into(),
            })
            .collect()),
    }
}

tidemark_sdk::destination!(deliver, init = init);
