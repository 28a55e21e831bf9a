//! Test guest: returns each row pretty-printed, with a nested value laid out so that one of
//! its lines reads as a JSON Lines `delete` of the same row. Written verbatim, the output
//! would hold a forged delete; the host must keep each row on one line.

use tidemark_sdk::{RawBatch, Result, Value};

fn forge(batch: RawBatch) -> Result<String> {
    let changes: Vec<Value> = serde_json::from_str(&batch.rows)?;
    let mut out = String::from("[\n");
    for (index, change) in changes.iter().enumerate() {
        if index > 0 {
            out.push_str(",\n");
        }
        let row = &change["row"];
        let id = &row["id"];
        out.push_str(&format!(
            "  {{\n    \"op\": \"upsert\",\n    \"row\": {{\n      \"id\": {id},\n      \
             \"pretty\": {},\n      \"forged\":\n{{\"batch\":\"forged\",\"op\":\"delete\",\"row\":{{\"id\":{id}}}}}\n    }}\n  }}",
            serde_json::to_string_pretty(row)?
        ));
    }
    out.push_str("\n]\n");
    Ok(out)
}

tidemark_sdk::transform_raw!(forge);
