use super::*;
use crate::runtime::bindings::Retry;

fn batch() -> Batch {
    Batch {
        id: "b-7".into(),
        pipeline: "hook".into(),
        rows: "[]".into(),
    }
}

fn not_allowed() -> Refused {
    Refused {
        origin: "https://typo.example:443".into(),
        why: "its origin is not on the allow-list; allow it with --allow-host https://typo.example:443".into(),
    }
}

fn retry_later(message: &str) -> ProcessorError {
    ProcessorError::RetryLater(Retry {
        message: message.into(),
        after_ms: Some(5_000),
    })
}

fn fatal(message: &str) -> ProcessorError {
    ProcessorError::Fatal(message.into())
}

fn judge(world: World, error: ProcessorError, refused: Option<&Refused>) -> Error {
    answer_error(
        "destination js_webhook",
        world,
        &batch(),
        error,
        str::to_owned,
        refused,
    )
}

#[test]
fn a_retry_later_without_a_refusal_is_retried_after_the_delay_asked() {
    let error = judge(World::Destination, retry_later("no response"), None);
    assert_eq!(error.kind(), ErrorKind::RetryLater);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(5)));
    assert_eq!(
        error.to_string(),
        "destination js_webhook asked to retry batch b-7 later: no response"
    );
}

#[test]
fn a_retry_later_after_a_refusal_stops_the_pipeline_naming_the_flag() {
    for world in [World::Destination, World::Transform] {
        let error = judge(world, retry_later("no response"), Some(&not_allowed()));
        assert_eq!(error.kind(), ErrorKind::Fatal, "{world:?}");
        // A stop about the destination: poison isolation must not split the batch.
        assert!(!error.kind().may_be_a_row());
        assert_eq!(error.retry_after(), None);
        assert_eq!(
            error.to_string(),
            "destination js_webhook asked to retry batch b-7 of pipeline \"hook\" later (no response), \
             but the host refused its request to https://typo.example:443: its origin is not on the \
             allow-list; allow it with --allow-host https://typo.example:443; retrying cannot help"
        );
    }
}

#[test]
fn a_fatal_answer_keeps_its_kind_and_adds_the_refusal() {
    let refused = not_allowed();
    let destination = judge(World::Destination, fatal("bad credentials"), Some(&refused));
    assert_eq!(destination.kind(), ErrorKind::Fatal);
    assert_eq!(
        destination.to_string(),
        format!(
            "destination js_webhook stopped pipeline \"hook\" at batch b-7: bad credentials; \
             the host refused its request to {refused}"
        )
    );
    let transform = judge(World::Transform, fatal("bad row"), Some(&refused));
    assert_eq!(transform.kind(), ErrorKind::TransformFatal);
    assert!(
        transform.to_string().ends_with(&format!(
            "bad row; the host refused its request to {refused}"
        )),
        "{transform}"
    );
    let alone = judge(World::Destination, fatal("bad credentials"), None);
    assert!(alone.to_string().ends_with(": bad credentials"), "{alone}");
}

#[test]
fn the_module_message_is_kept_as_said() {
    let error = answer_error(
        "destination js_webhook",
        World::Destination,
        &batch(),
        retry_later("token s3cret"),
        |said| said.replace("s3cret", "***"),
        Some(&not_allowed()),
    );
    assert!(error.to_string().contains("(token ***)"), "{error}");
}
