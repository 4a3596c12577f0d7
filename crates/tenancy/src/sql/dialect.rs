//! What differs between the SQL dialects the data API speaks, and nothing else: the
//! builder ([`super::builder`]) holds the algorithm once and asks a [`SqlDialect`] only for
//! placeholders, the few expressions that are spelled differently, and what the dialect
//! can do in one statement.

use crate::data::schema::{quote, Column, ColumnType};
use crate::migrations::Dialect;

use super::builder::Role;

/// One SQL dialect, described. The default methods are the portable spelling; a dialect
/// overrides only what it spells differently.
pub trait SqlDialect: Sync {
    /// Which dialect this is: statements written once per table are kept by it.
    fn dialect(&self) -> Dialect;

    /// The placeholder of the `n`th bound value (from 1), of `column` bound as `role`.
    fn placeholder(&self, n: usize, column: Option<&Column>, role: Role) -> String;

    /// A column as it is read into a result.
    fn read_expr(&self, column: &Column) -> String {
        quote(&column.name)
    }

    /// A column as it is compared for equality.
    fn eq_expr(&self, column: &Column) -> String {
        quote(&column.name)
    }

    /// A column as it is ordered and compared for order: the column itself, so that an
    /// ordinary index on it serves the ordering. In `ORDER BY` it is qualified by its
    /// `table`, so that it never names a result column instead.
    fn order_expr(&self, column: &Column, table: Option<&str>) -> String {
        qualified(column, table)
    }

    /// `expr LIKE pattern`, with `*`-wildcards already turned into `%`, folding ASCII
    /// letters only and with no escape character.
    fn like(&self, expr: &str, pattern: &str) -> String;

    /// `expr IS TRUE` / `expr IS FALSE`, keeping NULL rows under `NOT`.
    fn is_bool(&self, expr: &str, value: bool) -> String {
        format!("{expr} IS {}", if value { "TRUE" } else { "FALSE" })
    }

    /// The hidden row identity that orders a table without a primary key, and whether it
    /// is stable enough to page by (SQLite's `rowid` is; PostgreSQL's `ctid` moves).
    fn row_identity(&self) -> (&'static str, bool);

    /// Whether `VALUES (…, DEFAULT, …)` is allowed, so that rows naming different
    /// columns go in one statement.
    fn default_in_values(&self) -> bool;

    /// The most bound values one statement may carry.
    fn max_params(&self) -> usize;

    /// A statement that holds a lock on its one bound key (an integer) until the
    /// transaction ends, so that writers checking one limit take turns; `None` where the
    /// write transaction already excludes every other writer (SQLite's `IMMEDIATE`).
    fn transaction_lock(&self) -> Option<&'static str> {
        None
    }

    /// An upper bound of the row count of the table named `table` (quoted) that costs
    /// O(log n) (a table with a `rowid`: its span); `None` where there is none.
    fn row_count_bound(&self, _table: &str) -> Option<String> {
        None
    }
}

/// `"table"."column"`, or `"column"` alone.
fn qualified(column: &Column, table: Option<&str>) -> String {
    match table {
        Some(table) => format!("{}.{}", quote(table), quote(&column.name)),
        None => quote(&column.name),
    }
}

/// SQLite: `?n` placeholders, `LIKE` that folds ASCII letters by itself, `rowid`.
pub struct Sqlite;

impl SqlDialect for Sqlite {
    /// Two subqueries: SQLite answers a lone `max(rowid)` or `min(rowid)` from the b-tree's
    /// edge, but scans the table for both in one query.
    fn row_count_bound(&self, table: &str) -> Option<String> {
        Some(format!(
            "coalesce((SELECT max(rowid) FROM {table}) - (SELECT min(rowid) FROM {table}) + 1, 0)"
        ))
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    /// Numbered, so that values bind by number whatever their order in the text.
    fn placeholder(&self, n: usize, _: Option<&Column>, _: Role) -> String {
        format!("?{n}")
    }

    fn like(&self, expr: &str, pattern: &str) -> String {
        format!("{expr} LIKE {pattern}")
    }

    fn is_bool(&self, expr: &str, value: bool) -> String {
        // Booleans are integers: `IS 1`, so that `not.is.true` keeps NULL rows.
        format!("{expr} IS {}", u8::from(value))
    }

    fn row_identity(&self) -> (&'static str, bool) {
        ("rowid", true)
    }

    fn default_in_values(&self) -> bool {
        false
    }

    fn max_params(&self) -> usize {
        32_766
    }
}

/// PostgreSQL: `$n` placeholders whose types the server infers from the column they meet;
/// types the data API treats as text are read and compared as `::text`, JSON compared as
/// `jsonb`.
pub struct Postgres;

impl SqlDialect for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn transaction_lock(&self) -> Option<&'static str> {
        Some("SELECT pg_advisory_xact_lock($1::int8)")
    }

    fn placeholder(&self, n: usize, column: Option<&Column>, role: Role) -> String {
        match (column.map(|c| c.kind), role) {
            // 64-bit, as on SQLite: `n=lt.9999999999` on an `int4` is a comparison, not an
            // overflow (PostgreSQL compares int4 with int8 and keeps using indexes).
            (Some(ColumnType::Integer), Role::Filter | Role::Cursor | Role::Key) => {
                format!("${n}::int8")
            }
            _ => format!("${n}"),
        }
    }

    /// As text where the data API treats the column as text, so that every such type
    /// (enums, intervals, …) decodes; for `text` itself the cast is free.
    fn read_expr(&self, column: &Column) -> String {
        match column.kind {
            ColumnType::Text => format!("{}::text", quote(&column.name)),
            _ => quote(&column.name),
        }
    }

    /// `json` has no `=`; text-like types compare as text.
    fn eq_expr(&self, column: &Column) -> String {
        match column.kind {
            ColumnType::Text => format!("{}::text", quote(&column.name)),
            ColumnType::Json => format!("{}::jsonb", quote(&column.name)),
            _ => quote(&column.name),
        }
    }

    /// The column itself, in its own type and collation, so that a default btree index
    /// serves the ordering (`json` has no order: as `jsonb`).
    fn order_expr(&self, column: &Column, table: Option<&str>) -> String {
        match column.kind {
            ColumnType::Json => format!("{}::jsonb", qualified(column, table)),
            _ => qualified(column, table),
        }
    }

    /// SQLite's `LIKE` folds ASCII letters only; so does this.
    fn like(&self, expr: &str, pattern: &str) -> String {
        let lower = |e: &str| {
            format!("translate({e}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')")
        };
        format!("{} LIKE {} ESCAPE ''", lower(expr), lower(pattern))
    }

    fn row_identity(&self) -> (&'static str, bool) {
        ("ctid", false)
    }

    fn default_in_values(&self) -> bool {
        true
    }

    fn max_params(&self) -> usize {
        65_535
    }
}

/// An application's statement with PostgreSQL's `$1, $2, …` placeholders, for SQLite:
/// `?1, ?2, …` (outside string literals, quoted identifiers and comments), so that one
/// statement runs on either.
pub fn numbered_for_sqlite(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::numbered_for_sqlite;

    #[test]
    fn numbered_placeholders_become_sqlites() {
        assert_eq!(
            numbered_for_sqlite("SELECT * FROM t WHERE a = $1 AND b = $12"),
            "SELECT * FROM t WHERE a = ?1 AND b = ?12"
        );
        assert_eq!(
            numbered_for_sqlite("SELECT '$1', \"$2\" -- $3\nFROM t WHERE x = $4"),
            "SELECT '$1', \"$2\" -- $3\nFROM t WHERE x = ?4"
        );
        assert_eq!(numbered_for_sqlite("SELECT $a, $"), "SELECT $a, $");
    }
}
