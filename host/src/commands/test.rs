//! `host test`: modules over rows from a JSON file, without a database.
//!
//! The batch goes through the very chain `host run` uses ([`Chain`]), with the same checks of
//! what each module returns and the same answers from a destination; only the end differs: the
//! rows are captured instead of written, then printed. So a module that passes `host test`
//! is not refused by `host run`, and `host test` can gate a user's CI: it exits 1 when a module
//! fails (a transform's fatal answer too, which `host run` would meet by parking the rows at
//! fault: its hint says so) or returns rows `host run` would refuse, when a destination
//! answers fatal or retry later, and (with `--expect FILE`) when the rows differ from the
//! expected ones. Each call's time, fuel and memory go to standard error.

use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use super::{load_modules, module_values_only};
use crate::delivery::chain::Chain;
use crate::delivery::output::{JsonLines, Output};
use crate::delivery::poison;
use crate::delivery::retry::RetryPolicy;
use crate::engine::settings::ModulesConfig;
use crate::front::cli::TestArgs;
use crate::model::error::{Error, ErrorKind};
use crate::model::shutdown::Shutdown;
use crate::model::{self, Rows};

/// How many differences `--expect` lists before it stops counting them one by one.
const SHOWN_DIFFERENCES: usize = 20;

/// Runs `host test`.
pub async fn run(mut args: TestArgs) -> anyhow::Result<()> {
    module_values_only(
        std::mem::take(&mut args.config),
        &mut args.modules_config.set,
    )?;
    let config = ModulesConfig::from_args(args.modules_config)?;
    if config.modules.is_empty() {
        return Err(Error::invalid("no module to test")
            .with_hint("pass --module PATH")
            .into());
    }
    let rows = read_rows(&args.input)?;
    let expected = args.expect.as_deref().map(read_rows).transpose()?;
    let modules = load_modules(&config, &args.pipeline).await?;
    let (lines, captured) = JsonLines::capture();
    let mut chain = Chain::recording(modules, lines)?;
    if let (Some(path), true) = (&args.expect, chain.has_destination()) {
        return Err(Error::invalid(format!(
            "--expect {} compares output rows, but the chain ends in a destination, which writes none",
            path.display()
        ))
        .with_hint("drop --expect, or test the transforms without the destination")
        .into());
    }
    let batch = model::Batch {
        id: &args.batch_id,
        pipeline: &args.pipeline,
        rows: &rows,
    };
    let (result, _) = chain.deliver(batch).await;
    for call in chain.calls() {
        eprintln!(
            "{}: {:.2?}, fuel {}, peak memory {:.1} MiB",
            call.module,
            call.usage.time,
            match call.fuel_metered {
                true => call.usage.fuel.to_string(),
                false => "not metered".into(),
            },
            call.usage.peak_memory as f64 / (1 << 20) as f64
        );
    }
    let result = match result {
        Err(err) if err.kind().may_be_a_row() => Err(rows_at_fault(&mut chain, batch, err).await),
        result => result,
    };
    let delivered = result.map_err(|err| match err.kind() {
        ErrorKind::RetryLater => err.with_hint(
            "host run would offer the same batch again later (--max-retries, --retry-backoff), then stop",
        ),
        _ => err,
    })?;
    // Every rejected row, by the module that rejected it (its index counts in the rows that
    // module received); standard output keeps the rows, or the destination's answer.
    for row in &delivered.rejected {
        eprintln!("{} rejected row {}: {}", row.module, row.index, row.reason);
    }
    if chain.has_destination() {
        let last = chain.last_stage();
        let rejected: Vec<Value> = delivered
            .rejected
            .iter()
            .filter(|r| chain.stage_of(&r.module) == Some(last))
            .map(|r| serde_json::json!({"index": r.index, "reason": r.reason}))
            .collect();
        let answer = serde_json::json!({ "rejected": rejected });
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let output = captured_rows(&captured.take())?;
    println!("{}", serde_json::to_string_pretty(&output)?);
    if let (Some(expected), Some(path)) = (expected, &args.expect) {
        compare(&output, &envelopes(&expected), path)?;
    }
    Ok(())
}

/// What `host run` would do with a batch a module failed: the batch is split as poison
/// isolation splits it (the same calls under the same limits, none retried), and the rows the
/// module fails on alone are listed; the error says that `host run` would park them, or why
/// it would stop instead. `host test` fails either way: a gate must not pass a module that
/// fails on rows it will be given.
async fn rows_at_fault(chain: &mut Chain, batch: model::Batch<'_>, err: Error) -> Error {
    let Some(failure) = chain.take_failure() else {
        return err;
    };
    let module = failure.module.clone();
    let received = failure.input.len();
    // The search consumes an error to return when no row is at fault; the user sees `err`.
    let stand_in = Error::new(err.kind(), format!("{err:#}"));
    let policy = RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    };
    let (found, _) = poison::isolate(
        chain,
        batch,
        failure,
        stand_in,
        &policy,
        &Shutdown::default(),
        None,
    )
    .await;
    match found {
        Ok(delivered) if !delivered.parked.is_empty() => {
            for row in &delivered.parked {
                eprintln!(
                    "{} fails row {} alone: {}",
                    row.module,
                    row.index,
                    shortened(&row.row)
                );
            }
            let parked = delivered.parked.len();
            with_another_hint(
                err,
                format!(
                    "host run would park the {parked} row(s) of {received} listed above as dead \
                 letters and deliver the others (--on-poison park); fix the module, or the rows"
                ),
            )
        }
        Ok(_) => with_another_hint(
            err,
            format!(
                "each part of the batch passed when {module} was given it again: the failure \
             depends on more than the rows (a deadline under load, state); host run would retry \
             the batch (--max-retries)"
            ),
        ),
        Err(stop) => {
            let why = stop.to_string();
            let why = why.split(": ").next().unwrap_or_default().to_owned();
            with_another_hint(
                err,
                format!("host run would stop the pipeline, not park a row: {why}"),
            )
        }
    }
}

/// `err` with `hint` after the hint it had (how to fix the module: a limit's flag).
fn with_another_hint(err: Error, hint: String) -> Error {
    let hint = match err.hint() {
        Some(first) => format!("{first}; {hint}"),
        None => hint,
    };
    err.with_hint(hint)
}

/// A row as JSON text, cut for a log line.
fn shortened(row: &str) -> String {
    const SHOWN: usize = 200;
    match row.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &row[..end]),
        None => row.to_owned(),
    }
}

/// The rows of a `host test` file (`--input` or `--expect`), checked as `host run` checks a
/// module's output: plain objects are upserts; envelopes need `op` `upsert` or `delete`.
fn read_rows(path: &Path) -> anyhow::Result<Rows> {
    let text = std::fs::read_to_string(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => anyhow::Error::from(
            Error::invalid(format!("{} does not exist", path.display()))
                .with_hint("pass --input (or --expect) with a JSON file of rows"),
        ),
        _ => anyhow::Error::new(err).context(format!("reading {}", path.display())),
    })?;
    parse_rows(&text).map_err(|detail| {
        Error::invalid(format!(
            "{} is not a JSON array of rows: {detail}",
            path.display()
        ))
        .with_hint("write [{\"id\": 1, ...}, ...] or [{\"op\": \"upsert\", \"row\": {...}}, ...]")
        .into()
    })
}

fn parse_rows(text: &str) -> Result<Rows, String> {
    let items: Vec<Value> = serde_json::from_str(text).map_err(|err| err.to_string())?;
    let mut rows = Rows::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let element = match item {
            Value::Object(object) if object.contains_key("op") => Value::Object(object),
            Value::Object(row) => serde_json::json!({"op": "upsert", "row": row}),
            other => return Err(format!("element {index} is not an object: {other}")),
        };
        rows.push_element(&element.to_string())
            .map_err(|detail| format!("element {index}: {detail}"))?;
    }
    Ok(rows)
}

/// Rows as `{"op", "row"}` values, the form `host test` prints and compares.
fn envelopes(rows: &Rows) -> Vec<Value> {
    rows.iter()
        .map(|(op, row)| {
            let row: Value = serde_json::from_slice(row).unwrap_or(Value::Null);
            serde_json::json!({"op": op.as_str(), "row": row})
        })
        .collect()
}

/// The JSON Lines the chain wrote, without their batch id.
fn captured_rows(lines: &[u8]) -> anyhow::Result<Vec<Value>> {
    let text = std::str::from_utf8(lines).context("the captured output is not UTF-8")?;
    text.lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line)
                .with_context(|| format!("the captured output line {line:?} is not JSON"))?;
            Ok(serde_json::json!({"op": line["op"], "row": line["row"]}))
        })
        .collect()
}

/// Fails with the rows that differ, one line each (and, for a changed row, each column).
fn compare(output: &[Value], expected: &[Value], path: &Path) -> anyhow::Result<()> {
    let mut differences = Vec::new();
    for index in 0..output.len().max(expected.len()) {
        match (expected.get(index), output.get(index)) {
            (Some(want), Some(got)) if want == got => {}
            (Some(want), Some(got)) => {
                differences.push(format!(
                    "row {index}: expected {want}\n         got      {got}"
                ));
                differences.extend(column_differences(want, got));
            }
            (Some(want), None) => {
                differences.push(format!("row {index}: missing; expected {want}"))
            }
            (None, Some(got)) => differences.push(format!("row {index}: not expected: {got}")),
            (None, None) => {}
        }
    }
    if differences.is_empty() {
        eprintln!(
            "output matches {} ({} rows)",
            path.display(),
            expected.len()
        );
        return Ok(());
    }
    let total = differences.len();
    differences.truncate(SHOWN_DIFFERENCES);
    if total > SHOWN_DIFFERENCES {
        differences.push(format!(
            "… and {} more lines of differences",
            total - SHOWN_DIFFERENCES
        ));
    }
    Err(Error::new(
        ErrorKind::Fatal,
        format!(
            "the output ({} rows) differs from {} ({} rows):\n  {}",
            output.len(),
            path.display(),
            expected.len(),
            differences.join("\n  ")
        ),
    )
    .with_hint(format!(
        "fix the module, or update {} if the new output is right",
        path.display()
    ))
    .into())
}

/// For two rows that differ: the op if it differs, then each column that does.
fn column_differences(want: &Value, got: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    if want["op"] != got["op"] {
        lines.push(format!(
            "    op: expected {}, got {}",
            want["op"], got["op"]
        ));
    }
    let (Some(want), Some(got)) = (want["row"].as_object(), got["row"].as_object()) else {
        return lines;
    };
    let shown =
        |value: Option<&Value>| value.map_or_else(|| "no such column".to_owned(), Value::to_string);
    for key in want
        .keys()
        .chain(got.keys().filter(|key| !want.contains_key(*key)))
    {
        if want.get(key) != got.get(key) {
            lines.push(format!(
                "    {key:?}: expected {}, got {}",
                shown(want.get(key)),
                shown(got.get(key))
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_rows_are_checked_like_module_output() {
        assert_eq!(
            parse_rows(r#"[{"id": 1}, {"op": "delete", "row": {"id": 2}}]"#)
                .unwrap()
                .len(),
            2
        );
        let insert = parse_rows(r#"[{"op": "insert", "row": {"id": 1}}]"#).unwrap_err();
        assert!(insert.contains("element 0"), "{insert}");
        assert!(parse_rows(r#"{"rows": []}"#).is_err());
        assert!(parse_rows("[3]").unwrap_err().contains("not an object"));
    }

    #[test]
    fn a_mismatch_names_each_row_and_column() {
        let got = vec![
            serde_json::json!({"op": "upsert", "row": {"id": 1, "domain": "b.org"}}),
            serde_json::json!({"op": "upsert", "row": {"id": 2}}),
        ];
        let want = vec![serde_json::json!({"op": "upsert", "row": {"id": 1, "domain": "a.org"}})];
        let err = compare(&got, &want, Path::new("want.json")).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("\"domain\": expected \"a.org\", got \"b.org\""),
            "{text}"
        );
        assert!(text.contains("row 1: not expected"), "{text}");
        // Column order does not matter.
        let same = vec![serde_json::json!({"row": {"domain": "a.org", "id": 1}, "op": "upsert"})];
        assert!(compare(&same, &want, Path::new("want.json")).is_ok());
    }
}
