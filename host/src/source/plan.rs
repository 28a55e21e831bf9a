//! The table planner: checks what the user asked to read ([`TableSpec`]) against what the
//! database says the table is ([`TableDescription`]), once for all drivers.
//!
//! A driver reads its catalog and describes the table in these shared terms, classifying each
//! column's type as it alone knows how; the planner then resolves the cursor, key and deleted
//! column and raises every error about them, in the same words whichever the database. What
//! differs between drivers (type mapping, clock, value rendering, keyset SQL) stays with them.

use super::TableSpec;
use crate::model::error::{Error, Result};

/// How a column can serve as the cursor, as its driver classifies the column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorType {
    /// An instant: PostgreSQL `timestamptz`, MySQL `TIMESTAMP`.
    Instant,
    /// A date and time without a zone, read in `--time-zone` on databases that have zones:
    /// PostgreSQL `timestamp`, MySQL `DATETIME`, SQLite's date and time values.
    LocalTime,
    /// A number that only grows: it has no time to settle.
    Integer,
}

impl CursorType {
    /// Whether the cursor's values are times, which settle before they are read.
    pub fn is_time(self) -> bool {
        self != CursorType::Integer
    }
}

/// One column as its driver reads the catalog.
#[derive(Debug, Clone)]
pub struct ColumnDescription {
    pub name: String,
    /// The type as the database names it, for messages.
    pub type_name: String,
    /// Whether the column is declared to allow NULL.
    pub nullable: bool,
    /// How the type serves as a cursor; `None` when it cannot be one.
    pub cursor: Option<CursorType>,
    /// Whether the driver can page by this type as a key: compare it exactly in the database
    /// and write it back without loss.
    pub orders_rows: bool,
}

/// A table as its driver reads the catalog, in the terms the planner checks.
#[derive(Debug, Clone, Default)]
pub struct TableDescription {
    /// In the table's own order, which is the order rows are rendered in.
    pub columns: Vec<ColumnDescription>,
    /// The primary key's columns; empty when there is none.
    pub primary_key: Vec<String>,
    /// Columns that a unique index or constraint covers on their own.
    pub unique_columns: Vec<String>,
    /// Columns that some index starts with, so that a read ordered by them needs no scan.
    pub index_leaders: Vec<String>,
}

/// What the planner words or checks differently per driver.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    /// How to find the right table name on this database.
    pub missing_table_hint: &'static str,
    /// Which column types make a cursor here.
    pub cursor_hint: &'static str,
    /// Which column types make a key here.
    pub key_type_hint: &'static str,
    /// Whether a key column declared nullable is refused. SQLite's declarations do not bind
    /// (a primary key that is not an INTEGER may hold NULL), so its driver counts NULL keys in
    /// the rows instead.
    pub refuses_nullable_keys: bool,
}

/// The resolved columns of a read; indexes point into [`TableDescription::columns`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The table as the user named it, for messages.
    pub table: String,
    pub cursor: usize,
    pub cursor_type: CursorType,
    pub cursor_nullable: bool,
    pub key: usize,
    /// The key column's name: `--key`, or the single-column primary key.
    pub key_column: String,
    pub deleted: Option<usize>,
    /// Whether an index starts with the cursor (without one, every page scans the table).
    pub cursor_indexed: bool,
}

/// Checks `spec` against the table (`None`: it does not exist) and resolves its columns.
///
/// Errors come in a fixed order, the first that applies: table, cursor column, cursor type,
/// key column and its uniqueness (or the primary key), key nullability and type, deleted
/// column. A missing index on the cursor is a warning, logged here once.
pub fn plan(
    spec: &TableSpec,
    description: Option<&TableDescription>,
    dialect: &Dialect,
) -> Result<Plan> {
    let table = spec.table.to_string();
    let Some(description) = description else {
        return Err(Error::invalid(format!("table {table:?} does not exist"))
            .with_hint(dialect.missing_table_hint));
    };
    let columns = &description.columns;
    let names: Vec<&str> = columns.iter().map(|column| column.name.as_str()).collect();
    let find = |name: &str, flag: &str| find_column(&names, name, &table, flag);

    let cursor = find(&spec.cursor, "--cursor")?;
    let cursor_column = &columns[cursor];
    let Some(cursor_type) = cursor_column.cursor else {
        return Err(Error::invalid(format!(
            "column {:?} of {table:?} has type {}, which cannot be a cursor",
            spec.cursor, cursor_column.type_name
        ))
        .with_hint(dialect.cursor_hint));
    };

    let key_column = match &spec.key {
        Some(key) => {
            find(key, "--key")?;
            let is_unique = description.unique_columns.contains(key)
                || description.primary_key.as_slice() == std::slice::from_ref(key);
            if !is_unique {
                return Err(Error::invalid(format!(
                    "column {key:?} of {table:?} is not unique on its own"
                ))
                .with_hint("pass --key with the primary key or a column with a unique index"));
            }
            key.clone()
        }
        None => match description.primary_key.as_slice() {
            [single] => single.clone(),
            [] => {
                return Err(
                    Error::invalid(format!("table {table:?} has no primary key"))
                        .with_hint("pass --key with a unique, non-null column"),
                )
            }
            primary => {
                return Err(Error::invalid(format!(
                    "table {table:?} has a primary key of {} columns",
                    primary.len()
                ))
                .with_hint("pass --key with a unique, non-null column"))
            }
        },
    };
    let key = find(&key_column, "--key")?;
    let key_info = &columns[key];
    if dialect.refuses_nullable_keys && key_info.nullable {
        return Err(Error::invalid(format!(
            "key column {key_column:?} of {table:?} allows NULL"
        ))
        .with_hint("pass --key with a NOT NULL column, or make this one NOT NULL"));
    }
    if !key_info.orders_rows {
        return Err(Error::invalid(format!(
            "key column {key_column:?} of {table:?} has type {}, which cannot order rows",
            key_info.type_name
        ))
        .with_hint(dialect.key_type_hint));
    }
    let deleted = match &spec.deleted_column {
        Some(name) => Some(find(name, "--deleted-column")?),
        None => None,
    };

    let cursor_indexed = description.index_leaders.contains(&spec.cursor);
    if !cursor_indexed {
        // Without an index that leads with the cursor, every page is a full scan and sort,
        // and a large first sync grows quadratically: say so once, at start.
        tracing::warn!(
            "no index on {table} starts with column {:?}: every batch scans the table; \
             create one on ({}, {key_column})",
            spec.cursor,
            spec.cursor
        );
    }
    Ok(Plan {
        table,
        cursor,
        cursor_type,
        cursor_nullable: cursor_column.nullable,
        key,
        key_column,
        deleted,
        cursor_indexed,
    })
}

/// The index of column `name` among `names`, or an error that lists the columns and names
/// the flag that picks another.
fn find_column(names: &[&str], name: &str, table: &str, flag: &str) -> Result<usize> {
    names
        .iter()
        .position(|candidate| *candidate == name)
        .ok_or_else(|| {
            Error::invalid(format!("table {table:?} has no column {name:?}"))
                .with_hint(format!("pass {flag} with one of: {}", names.join(", ")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::error::ErrorKind;
    use crate::source::TableRef;

    const DIALECT: Dialect = Dialect {
        missing_table_hint: "check --table",
        cursor_hint: "pass --cursor with a time",
        key_type_hint: "pass --key with an integer",
        refuses_nullable_keys: true,
    };

    fn column(name: &str, type_name: &str) -> ColumnDescription {
        ColumnDescription {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
            nullable: false,
            cursor: match type_name {
                "timestamptz" => Some(CursorType::Instant),
                "timestamp" => Some(CursorType::LocalTime),
                "int8" => Some(CursorType::Integer),
                _ => None,
            },
            orders_rows: matches!(type_name, "int8" | "text"),
        }
    }

    /// `users (id int8 primary key, email text unique, name text, blob bytea, updated_at
    /// timestamptz indexed, deleted_at timestamptz)`.
    fn users() -> TableDescription {
        TableDescription {
            columns: vec![
                column("id", "int8"),
                column("email", "text"),
                column("name", "text"),
                column("blob", "bytea"),
                column("updated_at", "timestamptz"),
                ColumnDescription {
                    nullable: true,
                    ..column("deleted_at", "timestamptz")
                },
            ],
            primary_key: vec!["id".into()],
            unique_columns: vec!["id".into(), "email".into()],
            index_leaders: vec!["id".into(), "email".into(), "updated_at".into()],
        }
    }

    fn spec(cursor: &str, key: Option<&str>) -> TableSpec {
        TableSpec {
            table: TableRef::parse("users").unwrap(),
            cursor: cursor.to_owned(),
            key: key.map(str::to_owned),
            deleted_column: None,
            time_zone: "UTC".to_owned(),
        }
    }

    /// The error's message and hint, checking that it is the user's to fix.
    fn refused(spec: &TableSpec, description: Option<&TableDescription>) -> String {
        let err = plan(spec, description, &DIALECT).expect_err("the plan should be refused");
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
        format!("{err} / {}", err.hint().unwrap_or_default())
    }

    #[test]
    fn the_primary_key_is_the_default_key() {
        let mut spec = spec("updated_at", None);
        spec.deleted_column = Some("deleted_at".into());
        let plan = plan(&spec, Some(&users()), &DIALECT).unwrap();
        assert_eq!(
            plan,
            Plan {
                table: "users".into(),
                cursor: 4,
                cursor_type: CursorType::Instant,
                cursor_nullable: false,
                key: 0,
                key_column: "id".into(),
                deleted: Some(5),
                cursor_indexed: true,
            }
        );
    }

    #[test]
    fn a_unique_column_can_be_the_key() {
        let plan = plan(&spec("deleted_at", Some("email")), Some(&users()), &DIALECT).unwrap();
        assert_eq!((plan.key, plan.key_column.as_str()), (1, "email"));
        assert!(plan.cursor_nullable);
        assert!(!plan.cursor_indexed, "no index starts with deleted_at");
    }

    #[test]
    fn a_single_column_primary_key_counts_as_unique() {
        let mut table = users();
        table.unique_columns.clear();
        let plan = plan(&spec("updated_at", Some("id")), Some(&table), &DIALECT).unwrap();
        assert_eq!(plan.key_column, "id");
    }

    #[test]
    fn a_missing_table_names_it() {
        assert_eq!(
            refused(&spec("updated_at", None), None),
            "table \"users\" does not exist / check --table"
        );
    }

    #[test]
    fn a_missing_column_lists_the_columns_and_names_the_flag() {
        let all = "id, email, name, blob, updated_at, deleted_at";
        assert_eq!(
            refused(&spec("modified_at", None), Some(&users())),
            format!(
                "table \"users\" has no column \"modified_at\" / pass --cursor with one of: {all}"
            )
        );
        assert_eq!(
            refused(&spec("updated_at", Some("uid")), Some(&users())),
            format!("table \"users\" has no column \"uid\" / pass --key with one of: {all}")
        );
        let mut deleted = spec("updated_at", None);
        deleted.deleted_column = Some("gone".into());
        assert_eq!(
            refused(&deleted, Some(&users())),
            format!(
                "table \"users\" has no column \"gone\" / pass --deleted-column with one of: {all}"
            )
        );
    }

    #[test]
    fn a_cursor_of_another_type_is_refused() {
        assert_eq!(
            refused(&spec("name", None), Some(&users())),
            "column \"name\" of \"users\" has type text, which cannot be a cursor / pass \
             --cursor with a time"
        );
    }

    #[test]
    fn a_key_must_be_unique_on_its_own() {
        assert_eq!(
            refused(&spec("updated_at", Some("name")), Some(&users())),
            "column \"name\" of \"users\" is not unique on its own / pass --key with the \
             primary key or a column with a unique index"
        );
    }

    #[test]
    fn without_a_single_column_primary_key_the_key_is_asked_for() {
        let mut table = users();
        table.primary_key.clear();
        assert_eq!(
            refused(&spec("updated_at", None), Some(&table)),
            "table \"users\" has no primary key / pass --key with a unique, non-null column"
        );
        table.primary_key = vec!["id".into(), "email".into()];
        assert_eq!(
            refused(&spec("updated_at", None), Some(&table)),
            "table \"users\" has a primary key of 2 columns / pass --key with a unique, \
             non-null column"
        );
    }

    #[test]
    fn a_nullable_key_is_refused_where_declarations_bind() {
        let mut table = users();
        table.columns[1].nullable = true;
        assert_eq!(
            refused(&spec("updated_at", Some("email")), Some(&table)),
            "key column \"email\" of \"users\" allows NULL / pass --key with a NOT NULL \
             column, or make this one NOT NULL"
        );
        let rows_checked = Dialect {
            refuses_nullable_keys: false,
            ..DIALECT
        };
        let plan = plan(
            &spec("updated_at", Some("email")),
            Some(&table),
            &rows_checked,
        );
        assert_eq!(plan.unwrap().key_column, "email");
    }

    #[test]
    fn a_key_of_a_type_that_cannot_order_rows_is_refused() {
        let mut table = users();
        table.unique_columns.push("blob".into());
        assert_eq!(
            refused(&spec("updated_at", Some("blob")), Some(&table)),
            "key column \"blob\" of \"users\" has type bytea, which cannot order rows / pass \
             --key with an integer"
        );
    }

    #[test]
    fn errors_come_in_a_fixed_order() {
        // Both the cursor and the key are wrong: the cursor is reported first.
        assert!(refused(&spec("nope", Some("name")), Some(&users())).contains("\"nope\""));
        // The key is not unique and the deleted column is missing: the key comes first.
        let mut both = spec("updated_at", Some("name"));
        both.deleted_column = Some("gone".into());
        assert!(refused(&both, Some(&users())).contains("not unique"));
    }
}
