//! The rows a module returned, read in one pass: checked as JSON, split into elements and
//! minified together, where the general reading ([`super::Rows::from_json_array`] by serde_json)
//! takes three passes over every byte and was the largest cost a Rust transform added to a
//! sync (issue 13).
//!
//! This pass takes only the plain form of `[{"op": …, "row": {…}}, …]`: keys written without
//! escapes, `op` as the string `"upsert"` or `"delete"`, rows nested at most 64 deep. For
//! anything else it answers that it did not read the text, and the caller takes the general
//! path, which also words any error. So it must never accept text that path refuses, nor
//! read it differently: the tests below hold it to that on many mutations of valid text.

use super::Op;

/// Appends each row of `text` to `data`, minified, and its operation and end to `ends`.
/// False, with nothing appended, when `text` is not in the plain form (or not valid).
pub(super) fn plain_rows(text: &[u8], data: &mut Vec<u8>, ends: &mut Vec<(Op, usize)>) -> bool {
    let (data_len, ends_len) = (data.len(), ends.len());
    let read = Scanner {
        text,
        at: 0,
        data,
        ends,
    }
    .rows()
    .is_some();
    if !read {
        data.truncate(data_len);
        ends.truncate(ends_len);
    }
    read
}

/// Nesting past this depth takes the full parse (which has no such bound): the scanner keeps
/// one bit per open bracket.
const MAX_DEPTH: u32 = 64;

enum Key {
    Op,
    Row,
}

struct Scanner<'t, 'o> {
    text: &'t [u8],
    at: usize,
    data: &'o mut Vec<u8>,
    ends: &'o mut Vec<(Op, usize)>,
}

impl Scanner<'_, '_> {
    fn rows(&mut self) -> Option<()> {
        self.skip_space();
        self.expect(b'[')?;
        self.skip_space();
        if self.peek() == Some(b']') {
            self.at += 1;
        } else {
            loop {
                self.element()?;
                self.skip_space();
                match self.bump()? {
                    b',' => self.skip_space(),
                    b']' => break,
                    _ => return None,
                }
            }
        }
        self.skip_space();
        (self.at == self.text.len()).then_some(())
    }

    fn element(&mut self) -> Option<()> {
        self.expect(b'{')?;
        let mut op = None;
        let mut row = false;
        loop {
            self.skip_space();
            let key = self.envelope_key()?;
            self.skip_space();
            self.expect(b':')?;
            self.skip_space();
            match key {
                Key::Op if op.is_none() => op = Some(self.op()?),
                Key::Row if !row => {
                    self.row()?;
                    row = true;
                }
                _ => return None,
            }
            self.skip_space();
            match self.bump()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
        let op = op.filter(|_| row)?;
        self.ends.push((op, self.data.len()));
        Some(())
    }

    /// An element's key as written, without escapes: `"op"` or `"row"`.
    fn envelope_key(&mut self) -> Option<Key> {
        let rest = &self.text[self.at..];
        let (key, len) = if rest.starts_with(b"\"op\"") {
            (Key::Op, 4)
        } else if rest.starts_with(b"\"row\"") {
            (Key::Row, 5)
        } else {
            return None;
        };
        self.at += len;
        Some(key)
    }

    fn op(&mut self) -> Option<Op> {
        let rest = &self.text[self.at..];
        let op = if rest.starts_with(b"\"upsert\"") {
            Op::Upsert
        } else if rest.starts_with(b"\"delete\"") {
            Op::Delete
        } else {
            return None;
        };
        self.at += 8;
        Some(op)
    }

    /// A JSON object, validated and appended to `data` without the whitespace between its tokens.
    fn row(&mut self) -> Option<()> {
        if self.peek() != Some(b'{') {
            return None;
        }
        // Bytes from `run` up to `at` are yet to be copied; whitespace flushes the run.
        let mut run = self.at;
        let mut depth = 0u32;
        // Bit d is set when the bracket open at depth d + 1 is an object's.
        let mut objects = 0u64;
        loop {
            // A value starts here; `opened` when it is a container whose first member follows.
            let opened = match self.peek()? {
                open @ (b'{' | b'[') => {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    let object = open == b'{';
                    objects = (objects & !(1 << depth)) | (u64::from(object) << depth);
                    depth += 1;
                    self.at += 1;
                    self.row_space(&mut run);
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                        depth -= 1;
                        false
                    } else {
                        if object {
                            self.member_key(&mut run)?;
                        }
                        true
                    }
                }
                b'"' => self.string().map(|()| false)?,
                b't' => self.literal(b"true").map(|()| false)?,
                b'f' => self.literal(b"false").map(|()| false)?,
                b'n' => self.literal(b"null").map(|()| false)?,
                b'-' | b'0'..=b'9' => self.number().map(|()| false)?,
                _ => return None,
            };
            if opened {
                continue;
            }
            // After a value: a comma and the next one, or closing brackets.
            loop {
                if depth == 0 {
                    self.data.extend_from_slice(&self.text[run..self.at]);
                    return Some(());
                }
                self.row_space(&mut run);
                let object = objects >> (depth - 1) & 1 == 1;
                match (self.bump()?, object) {
                    (b',', _) => {
                        self.row_space(&mut run);
                        if object {
                            self.member_key(&mut run)?;
                        }
                        break;
                    }
                    (b'}', true) | (b']', false) => depth -= 1,
                    _ => return None,
                }
            }
        }
    }

    /// An object member's key and colon, with the whitespace after it.
    fn member_key(&mut self, run: &mut usize) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.string()?;
        self.row_space(run);
        self.expect(b':')?;
        self.row_space(run);
        Some(())
    }

    fn string(&mut self) -> Option<()> {
        self.at += 1;
        loop {
            self.skip_plain();
            match self.bump()? {
                b'"' => return Some(()),
                b'\\' => match self.bump()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        let hex = self.text.get(self.at..self.at + 4)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        self.at += 4;
                    }
                    _ => return None,
                },
                _ => return None,
            }
        }
    }

    /// Moves past the bytes of a string that need no look: all but `"`, `\` and controls.
    fn skip_plain(&mut self) {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
        let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
        // Eight bytes at a time while none of them is one of those (a string is mostly plain).
        while let Some(chunk) = self.text[self.at..].first_chunk::<8>() {
            let v = u64::from_ne_bytes(*chunk);
            let special = has_zero(v ^ (ONES * u64::from(b'"')))
                || has_zero(v ^ (ONES * u64::from(b'\\')))
                || v.wrapping_sub(ONES * 0x20) & !v & HIGHS != 0;
            if special {
                break;
            }
            self.at += 8;
        }
        while let Some(&b) = self.text.get(self.at) {
            if b == b'"' || b == b'\\' || b < 0x20 {
                return;
            }
            self.at += 1;
        }
    }

    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.bump()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.text[self.at..]
            .starts_with(word)
            .then(|| self.at += word.len())
    }

    /// Whitespace inside a row: the bytes before it are copied, it is not.
    fn row_space(&mut self, run: &mut usize) {
        if matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.data.extend_from_slice(&self.text[*run..self.at]);
            self.skip_space();
            *run = self.at;
        }
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.bump()? == byte).then_some(())
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Rows;

    /// Rows as their minified bytes and where each ends.
    type Read = (Vec<u8>, Vec<(Op, usize)>);

    /// What the one pass made of `text`, if it read it.
    fn scanned(text: &str) -> Option<Read> {
        let (mut data, mut ends) = (b"kept".to_vec(), Vec::new());
        let read = plain_rows(text.as_bytes(), &mut data, &mut ends);
        if !read {
            assert_eq!((&data[..], ends.len()), (&b"kept"[..], 0), "{text}");
        }
        read.then(|| {
            (
                data[4..].to_vec(),
                ends.iter().map(|&(op, end)| (op, end - 4)).collect(),
            )
        })
    }

    /// The general reading of `text`, which the one pass must agree with.
    fn general(text: &str) -> Option<Read> {
        let rows = Rows::general_from_json_array(text).ok()?;
        Some((rows.data, rows.ends))
    }

    const VALID: &[&str] = &[
        r#"[{"op":"upsert","row":{"id":1,"a\"b":"x\ny\u00e9","n":-1.50e+3,"j":{"k":[1, 2,{}],"e":[]},"t":true,"f":false,"z":null}}, {"op":"delete","row":{"id":2}}]"#,
        "[\n {\"row\": {\n \"a\" : [ 1 , \"\\u00e9 x\" ] } , \"op\" : \"delete\" }\n]\n",
        "[]",
        " [ ] ",
        r#"[{"op":"upsert","row":{}}]"#,
        r#"[{"op":"upsert","row":{"s":"é😀 a longer string, past eight bytes","n":0,"m":0.5,"x":[[[[]]]]}}]"#,
    ];

    #[test]
    fn reads_what_the_general_path_reads() {
        for text in VALID {
            let fast = scanned(text);
            assert!(fast.is_some(), "not read: {text}");
            assert_eq!(fast, general(text), "{text}");
        }
    }

    #[test]
    fn leaves_the_rest_to_the_general_path() {
        for text in [
            // Valid, but not the plain form: escaped keys and op, op as a map, deep nesting.
            r#"[{"\u006fp":"upsert","row":{}}]"#,
            r#"[{"op":"upser\u0074","row":{}}]"#,
            r#"[{"op":{"upsert":null},"row":{}}]"#,
            &format!(
                r#"[{{"op":"upsert","row":{{"d":{}1{}}}}}]"#,
                "[".repeat(70),
                "]".repeat(70)
            ),
            // Not valid.
            r#"[{"op":"upsert","row":{},"x":1}]"#,
            r#"[{"op":"upsert","op":"delete","row":{}}]"#,
            r#"[{"op":"upsert"}]"#,
            r#"[{"op":"upsert","row":[1]}]"#,
            r#"[{"op":"upsert","row":{"a":01}}]"#,
            r#"[{"op":"upsert","row":{"a":1.}}]"#,
            r#"[{"op":"upsert","row":{"a":"\x"}}]"#,
            "[{\"op\":\"upsert\",\"row\":{\"a\":\"\u{1}\"}}]",
            r#"[{"op":"upsert","row":{"a":1}},]"#,
            r#"[{"op":"upsert","row":{"a":1}}] x"#,
            r#"[{"op":"upsert","row":{"a":[1}}]"#,
            r#"{"op":"upsert","row":{}}"#,
        ] {
            assert_eq!(scanned(text), None, "{text}");
        }
        let deep = format!(
            r#"[{{"op":"upsert","row":{{"d":{}1{}}}}}]"#,
            "[".repeat(70),
            "]".repeat(70)
        );
        assert!(general(&deep).is_some());
    }

    /// Random edits of valid text: whatever the one pass reads, the general path reads the same.
    #[test]
    fn never_reads_differently_from_the_general_path() {
        let alphabet = b" \t\n{}[]\",:0123456789-+.eEtrufalsnu\\/x\x01\x1f\x7f";
        let mut rng = fastrand::Rng::with_seed(13);
        let (mut read, mut refused) = (0, 0);
        for text in VALID {
            for _ in 0..3_000 {
                let mut bytes = text.as_bytes().to_vec();
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(..=bytes.len());
                    let byte = alphabet[rng.usize(..alphabet.len())];
                    match rng.u8(..3) {
                        0 if at < bytes.len() => drop(bytes.remove(at)),
                        1 => bytes.insert(at, byte),
                        _ if at < bytes.len() => bytes[at] = byte,
                        _ => {}
                    }
                }
                let Ok(text) = String::from_utf8(bytes) else {
                    continue;
                };
                match scanned(&text) {
                    Some(fast) => {
                        assert_eq!(Some(fast), general(&text), "{text}");
                        read += 1;
                    }
                    None => refused += 1,
                }
            }
        }
        assert!(
            read > 1_000 && refused > 1_000,
            "{read} read, {refused} refused"
        );
    }
}
