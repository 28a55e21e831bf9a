//! Text a guest wrote, made safe to show: everything a module says reaches the host's log, its
//! errors and `host status` through here, so that a module cannot start a line of its own in
//! the host's log (a forged timestamp and level after a newline) or drive the operator's
//! terminal (ANSI escape sequences).

pub(super) mod log;
pub(super) mod transfer;

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character written as an escape: `\n`, `\r`, `\t`, and `\x1b` or
/// `\u{85}` for the others (C0, DEL, C1), and the Unicode line and paragraph separators and
/// bidirectional overrides as `\u{…}`. Printable text, backslashes included, is left alone.
pub fn escape_guest_text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        push_escaped(&mut escaped, c);
    }
    Cow::Owned(escaped)
}

/// The escaped form of the start of `text`, at most `max` bytes of it (at least one
/// character), and how many bytes of `text` it covers: a long text is escaped piece by piece,
/// never all at once.
pub fn escape_guest_prefix(text: &str, max: usize) -> (String, usize) {
    let mut escaped = String::with_capacity(max.min(text.len() + 16));
    let mut one = String::new();
    for (at, c) in text.char_indices() {
        one.clear();
        push_escaped(&mut one, c);
        if !escaped.is_empty() && escaped.len() + one.len() > max {
            return (escaped, at);
        }
        escaped.push_str(&one);
    }
    (escaped, text.len())
}

fn push_escaped(escaped: &mut String, c: char) {
    match c {
        '\n' => escaped.push_str("\\n"),
        '\r' => escaped.push_str("\\r"),
        '\t' => escaped.push_str("\\t"),
        c if (c as u32) < 0x80 && needs_escape(c) => {
            let _ = write!(escaped, "\\x{:02x}", c as u32);
        }
        c if needs_escape(c) => {
            let _ = write!(escaped, "\\u{{{:x}}}", c as u32);
        }
        c => escaped.push(c),
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Line and paragraph separators end a line in some viewers.
            '\u{2028}' | '\u{2029}'
            // Bidirectional embeddings, overrides and isolates reorder what a reader sees.
            | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn prefix_at_most(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(
            escape_guest_text("plain text, ünïcode \\n"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_guest_text("ok\n2026-01-01T00:00:00Z  INFO forged"),
            "ok\\n2026-01-01T00:00:00Z  INFO forged"
        );
        assert_eq!(
            escape_guest_text("\x1b[31mred\x1b[0m\r\t\0\x7f"),
            "\\x1b[31mred\\x1b[0m\\r\\t\\x00\\x7f"
        );
        assert_eq!(
            escape_guest_text("a\u{85}b\u{2028}c\u{202e}d"),
            "a\\u{85}b\\u{2028}c\\u{202e}d"
        );
    }

    #[test]
    fn long_text_is_escaped_a_piece_at_a_time() {
        let text = "ab\ncd\x1bé";
        assert_eq!(escape_guest_prefix(text, 3), ("ab".to_owned(), 2));
        assert_eq!(escape_guest_prefix(text, 4), ("ab\\n".to_owned(), 3));
        assert_eq!(escape_guest_prefix(&text[5..], 1), ("\\x1b".to_owned(), 1));
        assert_eq!(escape_guest_prefix(text, 100).1, text.len());
        assert_eq!(
            escape_guest_prefix(text, 100).0,
            escape_guest_text(text).into_owned()
        );
    }

    #[test]
    fn prefixes_end_on_character_boundaries() {
        assert_eq!(prefix_at_most("héllo", 2), "h");
        assert_eq!(prefix_at_most("héllo", 3), "hé");
        assert_eq!(prefix_at_most("abc", 10), "abc");
        assert_eq!(prefix_at_most("abc", 0), "");
    }
}
