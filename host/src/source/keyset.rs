//! Keyset SQL: the one place that decides which rows a read returns.
//!
//! Rows are ordered by `(cursor, key)` and a page starts strictly after the last row of the
//! previous one, so ties on the cursor of any size are paged exactly, and rows that change
//! while a batch is processed move to the end of the order instead of shifting an OFFSET.
//! Every compared value is bound as a parameter and cast back to the column's own type inside
//! the database, so the comparison is exact.

use super::Until;
use crate::model::Position;

/// How a driver spells parameters and compares pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `$1, $2, …`, row-value comparison `(c, k) > ($1, $2)` (PostgreSQL).
    DollarRowValues,
    /// `?`, row-value comparison (SQLite).
    QuestionRowValues,
    /// Values written into the SQL as quoted string literals, row-value comparison
    /// (PostgreSQL's `COPY (SELECT …) TO STDOUT`, which takes no parameters). The session
    /// must have `standard_conforming_strings` on, so that only `'` needs doubling.
    LiteralRowValues,
    /// `?`, comparison spelled out as `c > ? OR (c = ? AND k > ?)`, which MariaDB's range
    /// optimizer serves from an index on (cursor, key); it does not do so for row values.
    QuestionExpanded,
}

/// Which value a placeholder takes, in placeholder order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg<'a> {
    Cursor(&'a str),
    Key(&'a str),
    Horizon(&'a str),
}

impl<'a> Arg<'a> {
    /// The value's exact text, whichever column it belongs to.
    pub fn text(self) -> &'a str {
        match self {
            Arg::Cursor(text) | Arg::Key(text) | Arg::Horizon(text) => text,
        }
    }
}

/// The SQL pieces of one table, quoted and ready to assemble.
#[derive(Debug, Clone)]
pub struct Keyset {
    pub style: Style,
    /// `FROM` target, quoted.
    pub table: String,
    /// The columns to select, with any per-column conversion.
    pub select_list: String,
    /// Quoted cursor and key columns.
    pub cursor: String,
    pub key: String,
    /// Wraps a placeholder for a value of the cursor, key or horizon: `{}` stands for it,
    /// e.g. `CAST({} AS timestamptz)`.
    pub cursor_param: String,
    pub key_param: String,
    pub horizon_param: String,
}

/// A statement and the values its placeholders take, in order.
#[derive(Debug)]
pub struct Statement<'a> {
    pub sql: String,
    pub args: Vec<Arg<'a>>,
}

struct Builder<'a> {
    keyset: &'a Keyset,
    sql: String,
    args: Vec<Arg<'a>>,
}

impl<'a> Builder<'a> {
    fn push(&mut self, text: &str) {
        self.sql.push_str(text);
    }

    fn param(&mut self, arg: Arg<'a>) {
        let wrapper = match arg {
            Arg::Cursor(_) => &self.keyset.cursor_param,
            Arg::Key(_) => &self.keyset.key_param,
            Arg::Horizon(_) => &self.keyset.horizon_param,
        };
        self.args.push(arg);
        let placeholder = match self.keyset.style {
            Style::DollarRowValues => format!("${}", self.args.len()),
            Style::LiteralRowValues => quote_literal(arg.text()),
            Style::QuestionRowValues | Style::QuestionExpanded => "?".to_owned(),
        };
        self.sql.push_str(&wrapper.replace("{}", &placeholder));
    }

    /// `(cursor, key) <op> (c, k)` with `op` one of `>` or `<=`.
    fn compare_pair(&mut self, op: &str, cursor: &'a str, key: &'a str) {
        let (c, k) = (self.keyset.cursor.clone(), self.keyset.key.clone());
        match self.keyset.style {
            Style::DollarRowValues | Style::QuestionRowValues | Style::LiteralRowValues => {
                self.push(&format!("({c}, {k}) {op} ("));
                self.param(Arg::Cursor(cursor));
                self.push(", ");
                self.param(Arg::Key(key));
                self.push(")");
            }
            Style::QuestionExpanded => {
                let strict = if op == ">" { ">" } else { "<" };
                self.push(&format!("({c} {strict} "));
                self.param(Arg::Cursor(cursor));
                self.push(&format!(" OR ({c} = "));
                self.param(Arg::Cursor(cursor));
                self.push(&format!(" AND {k} {op} "));
                self.param(Arg::Key(key));
                self.push("))");
            }
        }
    }

    /// The WHERE clause (without the keyword) of a read from `after` up to `until`.
    fn filter(&mut self, after: &'a Position, until: Until<'a>) {
        let (c, k) = (self.keyset.cursor.clone(), self.keyset.key.clone());
        match after {
            Position::Nulls { after_key } => {
                self.push(&format!("{c} IS NULL"));
                if let Some(key) = after_key {
                    self.push(&format!(" AND {k} > "));
                    self.param(Arg::Key(key));
                }
                if let Until::Through(Position::Nulls {
                    after_key: Some(last),
                }) = until
                {
                    self.push(&format!(" AND {k} <= "));
                    self.param(Arg::Key(last));
                }
                return;
            }
            Position::Start => self.push(&format!("{c} IS NOT NULL")),
            Position::After(mark) => self.compare_pair(">", &mark.cursor, &mark.key),
        }
        match until {
            Until::Horizon(None) => {}
            Until::Horizon(Some(horizon)) => {
                self.push(&format!(" AND {c} < "));
                self.param(Arg::Horizon(horizon));
            }
            Until::Through(Position::After(last)) => {
                self.push(" AND ");
                self.compare_pair("<=", &last.cursor, &last.key);
            }
            // A re-read that ends among NULL cursors or at the start contains no non-NULL row.
            Until::Through(Position::Nulls { .. } | Position::Start) => self.push(" AND 1 = 0"),
        }
    }
}

impl Keyset {
    fn builder(&self, head: String) -> Builder<'_> {
        Builder {
            keyset: self,
            sql: head,
            args: Vec::new(),
        }
    }

    /// The page of at most `limit` rows after `after`, in delivery order.
    pub fn select<'a>(
        &'a self,
        after: &'a Position,
        until: Until<'a>,
        limit: usize,
    ) -> Statement<'a> {
        let mut b = self.builder(format!(
            "SELECT {} FROM {} WHERE ",
            self.select_list, self.table
        ));
        b.filter(after, until);
        let order = match after {
            Position::Nulls { .. } => self.key.clone(),
            Position::Start | Position::After(_) => format!("{}, {}", self.cursor, self.key),
        };
        b.push(&format!(" ORDER BY {order} LIMIT {limit}"));
        Statement {
            sql: b.sql,
            args: b.args,
        }
    }

    /// Up to `limit` keys (as `key_expr` selects them), in key order after `after_key`, of
    /// the rows a pipeline at `through` has delivered: those at or before it in delivery
    /// order, NULL cursors included (they come first).
    pub fn delivered_keys<'a>(
        &'a self,
        key_expr: &str,
        through: &'a Position,
        after_key: Option<&'a str>,
        limit: usize,
    ) -> Statement<'a> {
        let (c, k) = (self.cursor.clone(), self.key.clone());
        let mut b = self.builder(format!("SELECT {key_expr} FROM {} WHERE (", self.table));
        match through {
            Position::Nulls { after_key: None } => b.push("1 = 0"),
            Position::Nulls {
                after_key: Some(last),
            } => {
                b.push(&format!("{c} IS NULL AND {k} <= "));
                b.param(Arg::Key(last));
            }
            Position::Start => b.push(&format!("{c} IS NULL")),
            Position::After(mark) => {
                b.push(&format!("{c} IS NULL OR "));
                b.compare_pair("<=", &mark.cursor, &mark.key);
            }
        }
        b.push(")");
        if let Some(after) = after_key {
            b.push(&format!(" AND {k} > "));
            b.param(Arg::Key(after));
        }
        b.push(&format!(" ORDER BY {k} LIMIT {limit}"));
        Statement {
            sql: b.sql,
            args: b.args,
        }
    }

    /// How many rows have a NULL cursor.
    pub fn count_null_cursors(&self) -> String {
        format!(
            "SELECT COUNT(*) FROM {} WHERE {} IS NULL",
            self.table, self.cursor
        )
    }

    /// How many rows all reads from `after` up to `until` return together.
    pub fn count<'a>(&'a self, after: &'a Position, until: Until<'a>) -> Statement<'a> {
        self.filtered("SELECT COUNT(*)", after, until)
    }

    /// `head FROM table WHERE …` over the rows all reads from `after` up to `until` return:
    /// e.g. `EXPLAIN SELECT 1`, for the planner's estimate of their number.
    pub fn filtered<'a>(
        &'a self,
        head: &str,
        after: &'a Position,
        until: Until<'a>,
    ) -> Statement<'a> {
        let mut b = self.builder(format!("{head} FROM {} WHERE ", self.table));
        b.filter(after, until);
        Statement {
            sql: b.sql,
            args: b.args,
        }
    }
}

/// Quotes an identifier with `quote` (`"` or `` ` ``), doubling any inside it.
pub fn quote_ident(name: &str, quote: char) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push(quote);
    for ch in name.chars() {
        if ch == quote {
            quoted.push(quote);
        }
        quoted.push(ch);
    }
    quoted.push(quote);
    quoted
}

/// A string literal with any `'` inside doubled (standard conforming strings).
fn quote_literal(text: &str) -> String {
    quote_ident(text, '\'')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Watermark;

    fn keyset(style: Style) -> Keyset {
        Keyset {
            style,
            table: "\"users\"".into(),
            select_list: "*".into(),
            cursor: "\"updated_at\"".into(),
            key: "\"id\"".into(),
            cursor_param: "CAST({} AS timestamptz)".into(),
            key_param: "CAST({} AS int8)".into(),
            horizon_param: "CAST({} AS timestamptz)".into(),
        }
    }

    fn mark(cursor: &str, key: &str) -> Position {
        Position::After(Watermark {
            cursor: cursor.into(),
            key: key.into(),
        })
    }

    #[test]
    fn first_page_is_bounded_by_the_horizon_and_never_offsets() {
        let ks = keyset(Style::DollarRowValues);
        let stmt = ks.select(&Position::Start, Until::Horizon(Some("H")), 500);
        assert_eq!(
            stmt.sql,
            "SELECT * FROM \"users\" WHERE \"updated_at\" IS NOT NULL AND \"updated_at\" < \
             CAST($1 AS timestamptz) ORDER BY \"updated_at\", \"id\" LIMIT 500"
        );
        assert_eq!(stmt.args, vec![Arg::Horizon("H")]);
        assert!(!stmt.sql.contains("OFFSET"));
    }

    #[test]
    fn later_pages_start_strictly_after_the_pair() {
        let ks = keyset(Style::DollarRowValues);
        let after = mark("C", "K");
        let stmt = ks.select(&after, Until::Horizon(None), 7);
        assert_eq!(
            stmt.sql,
            "SELECT * FROM \"users\" WHERE (\"updated_at\", \"id\") > (CAST($1 AS timestamptz), \
             CAST($2 AS int8)) ORDER BY \"updated_at\", \"id\" LIMIT 7"
        );
        assert_eq!(stmt.args, vec![Arg::Cursor("C"), Arg::Key("K")]);
    }

    #[test]
    fn expanded_form_binds_each_use() {
        let mut ks = keyset(Style::QuestionExpanded);
        ks.cursor_param = "{}".into();
        ks.key_param = "CAST({} AS SIGNED)".into();
        ks.horizon_param = "{}".into();
        let after = mark("C", "K");
        let stmt = ks.select(&after, Until::Horizon(Some("H")), 10);
        assert_eq!(
            stmt.sql,
            "SELECT * FROM \"users\" WHERE (\"updated_at\" > ? OR (\"updated_at\" = ? AND \"id\" > \
             CAST(? AS SIGNED))) AND \"updated_at\" < ? ORDER BY \"updated_at\", \"id\" LIMIT 10"
        );
        assert_eq!(
            stmt.args,
            vec![
                Arg::Cursor("C"),
                Arg::Cursor("C"),
                Arg::Key("K"),
                Arg::Horizon("H")
            ]
        );
    }

    #[test]
    fn a_reread_stops_at_the_pending_batch_end() {
        let ks = keyset(Style::QuestionRowValues);
        let (after, last) = (mark("A", "1"), mark("B", "2"));
        let stmt = ks.select(&after, Until::Through(&last), 10);
        assert!(stmt.sql.contains(
            "(\"updated_at\", \"id\") > (CAST(? AS timestamptz), CAST(? AS int8)) AND (\"updated_at\", \"id\") <= (CAST(? AS timestamptz), CAST(? AS int8))"
        ), "{}", stmt.sql);
        assert_eq!(
            stmt.args,
            vec![
                Arg::Cursor("A"),
                Arg::Key("1"),
                Arg::Cursor("B"),
                Arg::Key("2")
            ]
        );
    }

    #[test]
    fn null_cursors_page_by_key_alone() {
        let ks = keyset(Style::DollarRowValues);
        let after = Position::Nulls {
            after_key: Some("5".into()),
        };
        let stmt = ks.select(&after, Until::Horizon(Some("H")), 3);
        assert_eq!(
            stmt.sql,
            "SELECT * FROM \"users\" WHERE \"updated_at\" IS NULL AND \"id\" > CAST($1 AS int8) \
             ORDER BY \"id\" LIMIT 3"
        );
    }

    #[test]
    fn counting_uses_the_same_filter() {
        let ks = keyset(Style::DollarRowValues);
        let stmt = ks.count(&Position::Start, Until::Horizon(None));
        assert_eq!(
            stmt.sql,
            "SELECT COUNT(*) FROM \"users\" WHERE \"updated_at\" IS NOT NULL"
        );
    }

    #[test]
    fn literal_values_are_quoted_in_place() {
        let mut ks = keyset(Style::LiteralRowValues);
        ks.key_param = "CAST({} AS text)".into();
        let after = mark("2024-01-01T00:00:00.000001Z", "o'brien");
        let stmt = ks.select(&after, Until::Horizon(Some("H")), 5);
        assert_eq!(
            stmt.sql,
            "SELECT * FROM \"users\" WHERE (\"updated_at\", \"id\") > (CAST('2024-01-01T00:00:00.000001Z' \
             AS timestamptz), CAST('o''brien' AS text)) AND \"updated_at\" < CAST('H' AS timestamptz) \
             ORDER BY \"updated_at\", \"id\" LIMIT 5"
        );
    }

    #[test]
    fn delivered_keys_are_those_at_or_before_the_watermark() {
        let ks = keyset(Style::DollarRowValues);
        let through = mark("C", "K");
        let stmt = ks.delivered_keys("\"id\"::text", &through, Some("5"), 100);
        assert_eq!(
            stmt.sql,
            "SELECT \"id\"::text FROM \"users\" WHERE (\"updated_at\" IS NULL OR \
             (\"updated_at\", \"id\") <= (CAST($1 AS timestamptz), CAST($2 AS int8))) AND \
             \"id\" > CAST($3 AS int8) ORDER BY \"id\" LIMIT 100"
        );
        assert_eq!(
            stmt.args,
            vec![Arg::Cursor("C"), Arg::Key("K"), Arg::Key("5")]
        );
        let none = Position::Nulls { after_key: None };
        assert!(ks
            .delivered_keys("id", &none, None, 1)
            .sql
            .contains("(1 = 0)"));
    }

    #[test]
    fn identifiers_are_quoted_safely() {
        assert_eq!(quote_ident("a\"b", '"'), "\"a\"\"b\"");
        assert_eq!(quote_ident("t`x", '`'), "`t``x`");
    }
}
