//! Delivers each batch to a webhook: one `POST` of
//! `{"id": <batch id>, "pipeline": <name>, "rows": [{"op": …, "row": {…}}, …]}` to the `url`
//! configured, with `Idempotency-Key: <batch id>` (a batch sent again carries the same id) and
//! `Authorization: Bearer <token>` when `token` is given (best as a secret).
//!
//! ```text
//! host run --table users --module target/wasm32-wasip2/release/webhook.wasm \
//!   --set url=https://hooks.example.com/users --secret token=WEBHOOK_TOKEN \
//!   --allow-host https://hooks.example.com
//! ```
//!
//! The receiver's answer decides what happens to the batch: a 2xx delivers it, and a JSON body
//! `{"rejected": [{"index": I, "reason": "…"}]}` hands rows back as rejected (they go to the
//! dead letters); 408, 429, 5xx and network errors make the host retry the batch later
//! (after `Retry-After` when sent); anything else, or an origin the host does not allow, stops
//! the pipeline.

use tidemark_sdk::http::{self, Request};
use tidemark_sdk::{json, log, Batch, ConfigKey, Error, Rejection, Result, Value};

const KEYS: &[ConfigKey] = &[
    ConfigKey::required("url", "where each batch is POSTed (http:// or https://)"),
    ConfigKey::optional("token", "sent as Authorization: Bearer <token>").secret(),
];

/// Checks the URL before any row is read: a typo stops the run at start, not at the first
/// batch.
fn init() -> Result<()> {
    let url = tidemark_sdk::require_config("url")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) || http::origin(&url).is_none()
    {
        return Err(Error::fatal(format!(
            "url {url:?} is not an http:// or https:// URL with a host"
        )));
    }
    Ok(())
}

fn deliver(batch: Batch) -> Result<Vec<Rejection>> {
    let url = tidemark_sdk::require_config("url")?;
    let mut request = Request::post(&url).header("idempotency-key", &batch.id);
    if let Some(token) = tidemark_sdk::config("token") {
        request = request.bearer_auth(&token);
    }
    // Denied by the host's allow-list: fatal, naming --allow-host; no response: retry later.
    let response = request.json(&payload(&batch))?.send()?;
    if !response.is_success() {
        let what = format!("POST {url} (batch {})", batch.id);
        return Err(response.error(&what, &response.body_excerpt(200)));
    }
    let (rejections, ignored) = rejections(&response.body, batch.changes.len());
    for entry in ignored {
        log::warn(format!(
            "batch {}: the receiver rejected {entry}, which is no row of the batch",
            batch.id
        ));
    }
    Ok(rejections)
}

/// The request body: the batch's id, pipeline and rows as the host handed them on.
fn payload(batch: &Batch) -> Value {
    json!({
        "id": batch.id,
        "pipeline": batch.pipeline,
        "rows": batch.changes,
    })
}

/// The rows a 2xx body rejects, from `{"rejected": [{"index": I, "reason": "…"}]}`; any other
/// body (empty, not JSON, no `rejected`) rejects none. Entries that name no row of a batch of
/// `rows` rows are returned apart, as their JSON text.
fn rejections(body: &[u8], rows: usize) -> (Vec<Rejection>, Vec<String>) {
    let Ok(Value::Object(body)) = parse_json(body) else {
        return (Vec::new(), Vec::new());
    };
    let Some(Value::Array(entries)) = body.get("rejected") else {
        return (Vec::new(), Vec::new());
    };
    let mut rejected: Vec<Rejection> = Vec::new();
    let mut ignored = Vec::new();
    for entry in entries {
        let index = entry
            .get("index")
            .and_then(Value::as_u64)
            .filter(|index| *index < rows as u64);
        let Some(index) = index else {
            ignored.push(entry.to_string());
            continue;
        };
        let reason = match entry.get("reason") {
            Some(Value::String(reason)) => reason.clone(),
            None | Some(Value::Null) => "rejected by the receiver".to_owned(),
            Some(other) => other.to_string(),
        };
        // One rejection per row: the first reason given wins.
        if !rejected.iter().any(|r| u64::from(r.index) == index) {
            rejected.push(Rejection {
                index: index as u32,
                reason,
            });
        }
    }
    (rejected, ignored)
}

fn parse_json(body: &[u8]) -> std::result::Result<Value, ()> {
    let text = std::str::from_utf8(body).map_err(|_| ())?;
    if text.trim().is_empty() {
        return Err(());
    }
    text.parse::<Value>().map_err(|_| ())
}

tidemark_sdk::destination!(deliver, keys = KEYS, init = init);

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_sdk::{Change, Op};

    #[test]
    fn payload_carries_id_pipeline_and_rows() {
        let row = json!({"id": 1, "email": "a@example.com"});
        let batch = Batch {
            id: "b1".into(),
            pipeline: "users".into(),
            changes: vec![
                Change::from_row(Op::Upsert, &row).unwrap(),
                Change::from_row(Op::Delete, &json!({"id": 2})).unwrap(),
            ],
        };
        assert_eq!(
            payload(&batch),
            json!({
                "id": "b1",
                "pipeline": "users",
                "rows": [
                    {"op": "upsert", "row": {"id": 1, "email": "a@example.com"}},
                    {"op": "delete", "row": {"id": 2}},
                ],
            })
        );
    }

    #[test]
    fn rejected_rows_from_the_body() {
        let body = br#"{"rejected": [{"index": 1, "reason": "bad email"},
            {"index": 1, "reason": "twice"}, {"index": 0}, {"index": 7, "reason": "x"},
            {"reason": "no index"}]}"#;
        let (rejected, ignored) = rejections(body, 3);
        assert_eq!(
            rejected,
            vec![
                Rejection {
                    index: 1,
                    reason: "bad email".into()
                },
                Rejection {
                    index: 0,
                    reason: "rejected by the receiver".into()
                },
            ]
        );
        assert_eq!(ignored.len(), 2, "{ignored:?}");
    }

    #[test]
    fn other_bodies_reject_nothing() {
        for body in [
            &b""[..],
            b"ok",
            b"{}",
            b"[]",
            br#"{"rejected": null}"#,
            b"\xff",
        ] {
            let (rejected, ignored) = rejections(body, 3);
            assert!(rejected.is_empty() && ignored.is_empty(), "{body:?}");
        }
    }
}
