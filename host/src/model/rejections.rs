//! The rule a module's rejections keep (a destination's, and a transform's since contract
//! 0.2), and the bound on what is kept of each.
//!
//! A module rejects each row of the batch at most once, by the row's position in the
//! batch's `rows` (from 0). An answer that breaks the rule (a million rejections of one row,
//! a row the batch does not have) would have the host copy a row, and write a dead letter, per
//! rejection; it fails the batch like a module fault instead: the batch is retried and the
//! watermark does not move. Each reason kept is cut to [`MAX_REASON`] bytes, secrets masked
//! first.

/// The longest reason kept, in bytes; a longer one is cut (on a character boundary) and
/// marked with its full length.
pub const MAX_REASON: usize = 1024;
/// How much of a long reason is searched for secrets before it is cut: enough that a secret
/// starting in the kept part is masked whole.
const REDACTED_PREFIX: usize = 16 << 10;

/// How a module that broke the rule can fix it.
pub const RULE_HINT: &str = "a module rejects each row of a batch at most once, by its \
    position in the batch's rows (from 0); the batch is retried and the watermark stays";

/// Checks `indexes` (of the rejected rows, in the answer's order) against a batch of `rows`
/// rows; on a broken rule, says what the module did. The count comes first, so a
/// million rejections cost one comparison.
pub fn check(indexes: impl ExactSizeIterator<Item = u32>, rows: usize) -> Result<(), String> {
    if indexes.len() > rows {
        return Err(format!(
            "rejected {} rows of a batch of {rows}: a module rejects each row at most once",
            indexes.len()
        ));
    }
    let mut seen = vec![false; rows];
    for index in indexes {
        match seen.get_mut(index as usize) {
            None => {
                return Err(format!(
                    "rejected row {index} of a batch of {rows}, which has no such row"
                ))
            }
            Some(true) => {
                return Err(format!(
                    "rejected row {index} more than once: a module rejects each row at most once"
                ))
            }
            Some(seen) => *seen = true,
        }
    }
    Ok(())
}

/// `reason` with its secrets masked by `redact`, cut to [`MAX_REASON`] bytes on a character
/// boundary, with a marker giving its full length when cut. Masking comes first, on a prefix
/// a little longer than what is kept, so that a cut never leaves half a secret.
pub fn bounded_reason(reason: &str, redact: impl Fn(&str) -> String) -> String {
    let masked = redact(&reason[..char_floor(reason, REDACTED_PREFIX)]);
    if reason.len() <= REDACTED_PREFIX && masked.len() <= MAX_REASON {
        return masked;
    }
    format!(
        "{}… (cut from {} bytes)",
        &masked[..char_floor(&masked, MAX_REASON)],
        reason.len()
    )
}

/// The largest index at most `at` that falls on a character boundary of `text`.
fn char_floor(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmasked(text: &str) -> String {
        text.to_owned()
    }

    #[test]
    fn short_reasons_are_kept_long_ones_cut_on_a_character_boundary() {
        assert_eq!(bounded_reason("bad email", unmasked), "bad email");
        let exact = "x".repeat(MAX_REASON);
        assert_eq!(bounded_reason(&exact, unmasked), exact);

        let long = "é".repeat(100 << 10);
        let cut = bounded_reason(&long, unmasked);
        assert!(
            cut.ends_with(&format!("… (cut from {} bytes)", long.len())),
            "{cut}"
        );
        let kept = cut.split('…').next().unwrap();
        assert_eq!(kept.len(), MAX_REASON);
        assert!(kept.chars().all(|c| c == 'é'));
        // An odd limit falls inside a two-byte character: the cut goes below it.
        let odd = format!("a{}", "é".repeat(MAX_REASON));
        let kept = bounded_reason(&odd, unmasked);
        assert_eq!(kept.split('…').next().unwrap().len(), MAX_REASON - 1);
    }

    #[test]
    fn secrets_are_masked_before_the_cut() {
        let secret = "tm-secret-0123456789";
        let mask = |text: &str| text.replace(secret, "***");
        // A secret across the cut is masked whole, not cut in half.
        let reason = format!("{}{secret}{}", "x".repeat(MAX_REASON - 5), "y".repeat(5000));
        let cut = bounded_reason(&reason, mask);
        assert!(!cut.contains("tm-secret"), "{cut}");
        assert!(cut.contains("***"), "{cut}");
        assert_eq!(bounded_reason(&format!("key {secret}"), mask), "key ***");
    }

    #[test]
    fn each_row_is_rejected_at_most_once_and_only_rows_the_batch_has() {
        assert_eq!(check([2, 0].into_iter(), 3), Ok(()));
        assert_eq!(check([].into_iter(), 0), Ok(()));
        let flood = check(std::iter::repeat_n(0, 1_000_000), 3).unwrap_err();
        assert_eq!(
            flood,
            "rejected 1000000 rows of a batch of 3: a module rejects each row at most once"
        );
        let past = check([3].into_iter(), 3).unwrap_err();
        assert_eq!(
            past,
            "rejected row 3 of a batch of 3, which has no such row"
        );
        let twice = check([1, 0, 1].into_iter(), 3).unwrap_err();
        assert!(
            twice.starts_with("rejected row 1 more than once"),
            "{twice}"
        );
    }
}
