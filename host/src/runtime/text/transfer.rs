//! How much the host copies out of a module in one go: a call's answer (a transform's rows or
//! error, a destination's rejections and their reasons), or the arguments of one host call.
//!
//! wasmtime copies what a module hands over (strings and lists, in the canonical ABI) into host
//! memory before the host sees any of it, and charges each copy against the store's "hostcall
//! fuel" (bytes of text, and the host size of each list element: 32 bytes a rejection); past
//! the fuel it refuses the copy before allocating. The fuel is set for every call here, so
//! that a module cannot make the host hold more than its answer can legitimately need, however
//! its answer is built: a million rejections of one row, or many rejections sharing one huge
//! reason in the module's memory (each copied anew), stop at the bound, not at the host's
//! memory.
//!
//! The bound:
//! - a transform: its `--memory-limit` (its rows may be as large as its memory);
//! - a destination: [`PER_ROW`] per row of the batch, at least [`FLOOR`], at most its
//!   `--memory-limit`. The host keeps at most 1 KiB of each reason (`rejections.rs`) and each
//!   row is rejected at most once, so a longer answer carries nothing the host would keep.
//!
//! What the copy costs the host is at most about twice the fuel (a small string's allocation
//! is rounded up), and it is freed when the call ends.
//!
//! wasmtime's lazy views (`WasmList`, `WasmStr`) are no way around the copy in this version:
//! it runs the module's post-return function (which frees the answer in the module's memory)
//! before returning them, so they would read freed memory (bytecodealliance/wasmtime#12467).

use crate::runtime::sched::limits::Limits;
use crate::runtime::World;

/// Answer bytes a destination may hand over per row of its batch.
pub const PER_ROW: usize = 64 << 10;
/// Answer bytes any destination may hand over, however small its batch.
pub const FLOOR: usize = 1 << 20;

/// The hostcall fuel of one call of a module of `world` on a batch whose rows are `rows` (the
/// JSON array text).
pub fn bound(world: World, limits: &Limits, rows: &str) -> usize {
    let memory = usize::try_from(limits.memory).unwrap_or(usize::MAX);
    match world {
        World::Transform => memory,
        World::Destination => count_rows(rows)
            .saturating_mul(PER_ROW)
            .max(FLOOR)
            .min(memory),
    }
}

/// Whether a failed call failed because the module handed over more than its bound. wasmtime's
/// error for it is a private type: its message is what there is to go by (the e2e test of
/// `reject-flood` notices if a new wasmtime words it otherwise).
pub fn exceeded(err: &wasmtime::Error) -> bool {
    format!("{err:#}").contains("fuel allocated for hostcalls has been exhausted")
}

/// What to say after "module M …" when a call went past its bound, and how to fix it.
pub fn exceeded_message(world: World, limits: &Limits, bound: usize) -> (String, &'static str) {
    let rule = match world {
        World::Transform => format!("its --memory-limit of {} MiB", limits.memory >> 20),
        World::Destination => format!(
            "{} KiB per row of the batch, at least {} MiB and at most its --memory-limit of {} MiB",
            PER_ROW >> 10,
            FLOOR >> 20,
            limits.memory >> 20
        ),
    };
    let hint = match world {
        World::Transform => "return fewer rows or a shorter error, or raise --memory-limit",
        World::Destination => {
            "reject each row at most once, with a short reason (the host keeps 1 KiB of each)"
        }
    };
    (
        format!(
            "handed the host more than {} KiB at once (its answer or the arguments of one host \
             call may be at most {rule})",
            bound >> 10
        ),
        hint,
    )
}

/// How many elements the JSON array `text` has, counted without parsing it: commas at the top
/// level, outside strings. On text that is not an array the count means nothing, but it never
/// falls below the true count of a valid one, so no valid answer is refused for it.
pub fn count_rows(text: &str) -> usize {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut commas = 0usize;
    let mut any = false;
    for &byte in text.as_bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                any |= depth == 1;
            }
            b'[' | b'{' => {
                any |= depth == 1;
                depth += 1;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => commas += 1,
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => any |= depth == 1,
        }
    }
    if any {
        commas + 1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_counted_at_the_top_level_only() {
        assert_eq!(count_rows("[]"), 0);
        assert_eq!(count_rows(" [ ] "), 0);
        assert_eq!(
            count_rows(r#"[{"op":"upsert","row":{"a":1,"b":[1,2,3]}}]"#),
            1
        );
        let tricky = r#"[{"row":{"s":"a,b]\"],["}},{"row":{}} , {"row":{"t":"\\"}}]"#;
        assert_eq!(count_rows(tricky), 3);
        let rows: Vec<serde_json::Value> = serde_json::from_str(tricky).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(count_rows("[1,2,3]"), 3);
    }

    #[test]
    fn a_destination_may_hand_over_per_row_within_its_memory() {
        let limits = Limits::default();
        let three = r#"[{"row":{}},{"row":{}},{"row":{}}]"#;
        assert_eq!(bound(World::Destination, &limits, three), FLOOR);
        let many = format!("[{}{{}}]", "{},".repeat(999));
        assert_eq!(bound(World::Destination, &limits, &many), 1000 * PER_ROW);
        let huge = format!("[{}{{}}]", "{},".repeat(99_999));
        assert_eq!(
            bound(World::Destination, &limits, &huge),
            limits.memory as usize
        );
        assert_eq!(
            bound(World::Transform, &limits, three),
            limits.memory as usize
        );
        let (what, hint) = exceeded_message(World::Destination, &limits, FLOOR);
        assert!(what.contains("more than 1024 KiB at once"), "{what}");
        assert!(what.contains("64 KiB per row"), "{what}");
        assert!(what.contains("--memory-limit of 256 MiB"), "{what}");
        assert!(hint.contains("at most once"), "{hint}");
    }
}
