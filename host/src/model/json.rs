//! Writing database values as JSON, straight into a page's buffer.
//!
//! The mapping (the same for every driver): integers as numbers, floats as numbers (NaN and
//! infinities, which JSON cannot hold, as the strings "NaN", "Infinity", "-Infinity"), exact
//! decimals as strings, timestamps as RFC 3339 with six fractional digits (`Z` when the value
//! is absolute), bytes as base64, JSON inline (minified: see [`write_raw`]), NULL as null.

use base64::Engine as _;
use chrono::{Datelike, NaiveDateTime, Timelike};

use crate::model::push_minified;

/// The `"name":` prefix of a column, escaped once per table instead of once per row.
pub fn object_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 3);
    write_str(&mut key, name);
    key.push(b':');
    key
}

pub fn write_str(buf: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail; serde_json's escaper is the one all JSON here goes through.
    let _ = serde_json::to_writer(&mut *buf, text);
}

pub fn write_null(buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"null");
}

pub fn write_bool(buf: &mut Vec<u8>, value: bool) {
    buf.extend_from_slice(if value { b"true" } else { b"false" });
}

pub fn write_i64(buf: &mut Vec<u8>, value: i64) {
    buf.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

pub fn write_u64(buf: &mut Vec<u8>, value: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

pub fn write_f64(buf: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        buf.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
    } else if value.is_nan() {
        buf.extend_from_slice(b"\"NaN\"");
    } else if value > 0.0 {
        buf.extend_from_slice(b"\"Infinity\"");
    } else {
        buf.extend_from_slice(b"\"-Infinity\"");
    }
}

pub fn write_f32(buf: &mut Vec<u8>, value: f32) {
    if value.is_finite() {
        // Shortest text that reads back as the same f32, not the f64 widening's long tail.
        buf.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
    } else {
        write_f64(buf, f64::from(value));
    }
}

pub fn write_base64(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.push(b'"');
    let start = buf.len();
    let encoded_len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    buf.resize(start + encoded_len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut buf[start..])
        .unwrap_or(0);
    buf.truncate(start + written);
    buf.push(b'"');
}

/// Inlines text that already is JSON (a `json` column), minified.
///
/// JSON Lines gives each row one line, and a database keeps JSON as it was written: a value
/// with line breaks between its tokens, written verbatim, would split its row into lines an
/// application user chose, such as a forged `delete`. So the whitespace between tokens goes;
/// JSON strings cannot hold a raw line break, so that is every line break of a valid value.
/// Text that is not one self-contained value (unbalanced brackets, an open string, a comma at
/// the top: a database that does not check its JSON) could reach outside its place in the
/// row; it is written as a JSON string instead.
pub fn write_raw(buf: &mut Vec<u8>, json: &str) {
    if !push_minified(buf, json.as_bytes()) {
        write_str(buf, json);
    }
}

pub fn write_uuid(buf: &mut Vec<u8>, value: &sqlx::types::Uuid) {
    let mut text = [0u8; 36];
    buf.push(b'"');
    buf.extend_from_slice(value.hyphenated().encode_lower(&mut text).as_bytes());
    buf.push(b'"');
}

/// A timestamp as a JSON string: `"2024-05-01T12:00:00.000001Z"` (`zulu`) or without the `Z`
/// for values that carry no zone.
pub fn write_timestamp(buf: &mut Vec<u8>, value: &NaiveDateTime, zulu: bool) {
    buf.push(b'"');
    push_timestamp(buf, value, zulu);
    buf.push(b'"');
}

/// The same text as [`write_timestamp`], unquoted: every database here reads it back as the
/// same instant, to the microsecond, so it doubles as the exact watermark text.
pub fn timestamp_text(value: &NaiveDateTime, zulu: bool) -> String {
    let mut buf = Vec::with_capacity(28);
    push_timestamp(&mut buf, value, zulu);
    String::from_utf8(buf).expect("timestamps format as ASCII")
}

fn push_timestamp(buf: &mut Vec<u8>, value: &NaiveDateTime, zulu: bool) {
    let year = value.year();
    if !(0..=9999).contains(&year) {
        // Outside RFC 3339's four-digit years: chrono's own (ISO 8601 extended) form.
        let text = value.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
        buf.extend_from_slice(text.as_bytes());
    } else {
        push_digits(buf, year as u32, 4);
        buf.push(b'-');
        push_digits(buf, value.month(), 2);
        buf.push(b'-');
        push_digits(buf, value.day(), 2);
        buf.push(b'T');
        push_digits(buf, value.hour(), 2);
        buf.push(b':');
        push_digits(buf, value.minute(), 2);
        buf.push(b':');
        // A leap second shows as second 60, the form RFC 3339 uses.
        let nanos = value.nanosecond();
        let (second, nanos) = if nanos >= 1_000_000_000 {
            (60, nanos - 1_000_000_000)
        } else {
            (value.second(), nanos)
        };
        push_digits(buf, second, 2);
        buf.push(b'.');
        push_digits(buf, nanos / 1_000, 6);
    }
    if zulu {
        buf.push(b'Z');
    }
}

fn push_digits(buf: &mut Vec<u8>, value: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut rest = value;
    for slot in digits[..width].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    buf.extend_from_slice(&digits[..width]);
}

/// Reads a timestamp in the forms sources produce (`T` or space between date and time,
/// optional fraction, optional `Z` or `+00`/`+00:00`), for lag arithmetic only.
pub fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    let trimmed = text
        .trim_end_matches('Z')
        .trim_end_matches("+00:00")
        .trim_end_matches("+00");
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(trimmed, format).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut buf = Vec::new();
        f(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn timestamps_keep_every_microsecond() {
        let ts =
            NaiveDateTime::parse_from_str("2024-02-29 23:59:59.000001", "%Y-%m-%d %H:%M:%S%.f")
                .unwrap();
        assert_eq!(
            render(|b| write_timestamp(b, &ts, true)),
            "\"2024-02-29T23:59:59.000001Z\""
        );
        assert_eq!(timestamp_text(&ts, false), "2024-02-29T23:59:59.000001");
        assert_eq!(parse_timestamp("2024-02-29T23:59:59.000001Z"), Some(ts));
        assert_eq!(parse_timestamp("2024-02-29 23:59:59.000001+00"), Some(ts));
    }

    #[test]
    fn numbers_and_non_finite_floats() {
        assert_eq!(render(|b| write_i64(b, -42)), "-42");
        assert_eq!(render(|b| write_u64(b, u64::MAX)), "18446744073709551615");
        assert_eq!(render(|b| write_f64(b, 0.1)), "0.1");
        assert_eq!(render(|b| write_f32(b, 0.1)), "0.1");
        assert_eq!(render(|b| write_f64(b, f64::NAN)), "\"NaN\"");
        assert_eq!(render(|b| write_f64(b, f64::NEG_INFINITY)), "\"-Infinity\"");
    }

    #[test]
    fn strings_bytes_and_keys_are_escaped() {
        assert_eq!(render(|b| write_str(b, "a\"b\n")), r#""a\"b\n""#);
        assert_eq!(render(|b| write_base64(b, b"hi!")), "\"aGkh\"");
        assert_eq!(render(|b| write_base64(b, b"")), "\"\"");
        assert_eq!(object_key("e\"mail"), br#""e\"mail":"#.to_vec());
    }

    fn minified(text: &str) -> Option<String> {
        let mut buf = b"prefix".to_vec();
        let sound = push_minified(&mut buf, text.as_bytes());
        let rest = String::from_utf8(buf[6..].to_vec()).unwrap();
        assert_eq!(sound, !rest.is_empty(), "{text:?} appended {rest:?}");
        sound.then_some(rest)
    }

    #[test]
    fn raw_json_loses_the_whitespace_between_tokens_only() {
        let pretty = "{\n  \"a\": [1, 2,\r\n\t3],\n  \"b\": {\"c d\": \" x \\n \"}\n}\n";
        assert_eq!(
            minified(pretty).as_deref(),
            Some(r#"{"a":[1,2,3],"b":{"c d":" x \n "}}"#)
        );
        // Escaped quotes and backslashes do not end a string early.
        assert_eq!(
            minified(r#"[ "a\" ]", "\\" , "\\\" " ]"#).as_deref(),
            Some(r#"["a\" ]","\\","\\\" "]"#)
        );
        for plain in ["1", "-2.5e10", "true", "null", "\"s\"", "{}", "[]"] {
            assert_eq!(minified(plain).as_deref(), Some(plain));
        }
        assert_eq!(minified("  7\n").as_deref(), Some("7"));
        // Unicode passes untouched.
        assert_eq!(
            minified("[\"é ü\" , \"😀\"]").as_deref(),
            Some("[\"é ü\",\"😀\"]")
        );
    }

    #[test]
    fn raw_json_that_could_leave_its_place_is_refused() {
        for hostile in [
            "",
            " \n ",
            "1},\"op\":\"delete\",\"x\":{",
            "{\"a\":1}}",
            "[1",
            "\"open",
            "1,2",
            "\"k\":1",
            "\"a\nb\"",
            "\"a\\\nb\"",
            "{\"a\":\u{0}1}",
        ] {
            assert_eq!(minified(hostile), None, "{hostile:?}");
        }
    }

    #[test]
    fn unsound_raw_json_is_written_as_a_string() {
        let hostile = "1}\n{\"op\":\"delete\",\"row\":{\"id\":1}";
        let text = render(|b| write_raw(b, hostile));
        assert!(!text.contains('\n'), "{text}");
        assert_eq!(serde_json::from_str::<String>(&text).unwrap(), hostile);
        assert_eq!(render(|b| write_raw(b, "{ \"a\" :\n 1 }")), r#"{"a":1}"#);
    }
}
