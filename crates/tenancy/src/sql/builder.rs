//! The data API's SQL, written once for every dialect: filters, ordering, keyset pages,
//! inserts, updates and deletes become [`Statement`]s — SQL text plus bound values — in
//! which every identifier comes from the introspected schema (quoted) and every value is a
//! bound parameter. A [`SqlDialect`] supplies the few spellings that differ.
//!
//! Orderings are index-friendly in every dialect: keys are the columns themselves, a
//! column that cannot hold NULL gets no `NULLS` clause, and a keyset page on keys that are
//! all NOT NULL and in one direction is a row-value comparison (`(a, id) > ($1, $2)`),
//! which a btree index on those columns answers with a range scan. NULLs sort first
//! ascending and last descending (SQLite's order), written out for nullable keys.

use std::borrow::Cow;
use std::sync::OnceLock;

use crate::data::query::{require_filters, Filter, ListQuery, Op};
use crate::data::schema::{printable, quote, Column, ColumnType, Table};
use crate::data::value::{json_to_value, text_to_value, Value};
use crate::data::Object;
use crate::error::{Error, Result};
use crate::migrations::Dialect;

use super::dialect::SqlDialect;

pub const MAX_INSERT_ROWS: usize = 1000;

/// The most bytes of text, bytes or JSON one row may put in the columns of one index.
/// PostgreSQL's B-tree entries hold about 2,700 bytes (a third of a page, less headers
/// and, in `shared` mode, the tenant id), and past it a write fails there while SQLite
/// takes it: the engine holds every store to this one bound, so the modes agree.
pub const MAX_INDEXED_BYTES: usize = 2000;

/// Why a value is bound, which decides how one that its column refuses is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Written into a column: `InvalidValue` naming it.
    Value,
    /// A filter operand: `InvalidFilter`.
    Filter,
    /// A value from a cursor: the cursor is not one of this listing.
    Cursor,
    /// The key of a `/{table}/{id}` path: no such row.
    Key,
    /// A number the engine chose.
    Limit,
}

/// One bound value, with the column it meets.
#[derive(Debug, Clone)]
pub struct Bind<'t> {
    pub column: Option<&'t Column>,
    pub value: Value,
    pub role: Role,
}

/// What a statement answers.
#[derive(Debug, Clone)]
pub enum Returns<'t> {
    /// Rows: the first `columns.len()` values make the row's object, the `cursor_keys`
    /// values after them are read as a cursor.
    Rows {
        columns: Vec<&'t Column>,
        cursor_keys: usize,
    },
    /// One row of one integer.
    Count,
    /// The number of rows changed.
    Affected,
}

/// SQL text and its bound values (`binds[i]` is placeholder `i + 1`). The text of a
/// statement that depends only on its table is borrowed from the table ([`TableSql`]).
#[derive(Debug, Clone)]
pub struct Statement<'t> {
    pub sql: Cow<'t, str>,
    pub binds: Vec<Bind<'t>>,
    pub returns: Returns<'t>,
}

/// Collects bound values and answers their placeholders.
struct Binds<'d, 't> {
    dialect: &'d dyn SqlDialect,
    binds: Vec<Bind<'t>>,
}

impl<'d, 't> Binds<'d, 't> {
    fn new(dialect: &'d dyn SqlDialect) -> Self {
        Binds {
            dialect,
            binds: Vec::new(),
        }
    }

    fn push(&mut self, column: Option<&'t Column>, value: Value, role: Role) -> String {
        self.binds.push(Bind {
            column,
            value,
            role,
        });
        self.dialect.placeholder(self.binds.len(), column, role)
    }
}

fn column<'t>(table: &'t Table, name: &str) -> Result<&'t Column> {
    table.column(name).ok_or_else(|| Error::ColumnNotFound {
        column: printable(name),
    })
}

fn read_list(dialect: &dyn SqlDialect, columns: &[&Column]) -> String {
    columns
        .iter()
        .map(|c| dialect.read_expr(c))
        .collect::<Vec<_>>()
        .join(", ")
}

fn all_columns(table: &Table) -> Vec<&Column> {
    table.columns.iter().collect()
}

fn every_column(table: &Table) -> Returns<'_> {
    Returns::Rows {
        columns: all_columns(table),
        cursor_keys: 0,
    }
}

/// The filters as a condition (`TRUE` without any), their values bound.
fn where_clause<'t>(table: &'t Table, filters: &[Filter], b: &mut Binds<'_, 't>) -> Result<String> {
    if filters.is_empty() {
        return Ok("TRUE".to_owned());
    }
    let d = b.dialect;
    let mut parts = Vec::with_capacity(filters.len());
    for f in filters {
        let col = column(table, f.column())?;
        let values = f.values();
        let mut operand = |i: usize| -> Result<String> {
            let value = values
                .get(i)
                .ok_or_else(|| Error::Internal(format!("filter on {} lacks a value", col.name)))?;
            Ok(b.push(Some(col), value.clone(), Role::Filter))
        };
        let cond = match f.op() {
            Op::Eq => format!("{} = {}", d.eq_expr(col), operand(0)?),
            Op::Neq => format!("{} <> {}", d.eq_expr(col), operand(0)?),
            Op::Lt => format!("{} < {}", d.order_expr(col, None), operand(0)?),
            Op::Lte => format!("{} <= {}", d.order_expr(col, None), operand(0)?),
            Op::Gt => format!("{} > {}", d.order_expr(col, None), operand(0)?),
            Op::Gte => format!("{} >= {}", d.order_expr(col, None), operand(0)?),
            Op::Like => {
                let pattern = operand(0)?;
                d.like(&d.eq_expr(col), &pattern)
            }
            Op::In => {
                let list = (0..values.len())
                    .map(&mut operand)
                    .collect::<Result<Vec<_>>>()?;
                format!("{} IN ({})", d.eq_expr(col), list.join(", "))
            }
            Op::IsNull => format!("{} IS NULL", quote(&col.name)),
            Op::IsTrue => d.is_bool(&quote(&col.name), true),
            Op::IsFalse => d.is_bool(&quote(&col.name), false),
        };
        parts.push(if f.negated() {
            format!("NOT ({cond})")
        } else {
            format!("({cond})")
        });
    }
    Ok(parts.join(" AND "))
}

/// An ordering key: a column, or the dialect's hidden row identity (tables without a
/// primary key).
#[derive(Clone, Copy)]
enum Key<'t> {
    Column(&'t Column),
    Identity(&'static str),
}

impl<'t> Key<'t> {
    fn order_expr(self, d: &dyn SqlDialect) -> String {
        self.qualified_order_expr(d, None)
    }

    fn qualified_order_expr(self, d: &dyn SqlDialect, table: Option<&str>) -> String {
        match self {
            Key::Column(c) => d.order_expr(c, table),
            Key::Identity(name) => name.to_owned(),
        }
    }

    /// How the key is read into a cursor: as it compares.
    fn cursor_expr(self, d: &dyn SqlDialect) -> String {
        match self {
            Key::Column(c) => d.eq_expr(c),
            Key::Identity(name) => name.to_owned(),
        }
    }

    fn nullable(self) -> bool {
        match self {
            Key::Column(c) => c.nullable,
            Key::Identity(_) => false,
        }
    }

    fn column(self) -> Option<&'t Column> {
        match self {
            Key::Column(c) => Some(c),
            Key::Identity(_) => None,
        }
    }

    fn null_test(self, d: &dyn SqlDialect, not: bool) -> String {
        let expr = match self {
            Key::Column(c) => quote(&c.name),
            Key::Identity(_) => self.order_expr(d),
        };
        format!("{expr} IS {}NULL", if not { "NOT " } else { "" })
    }
}

/// `ORDER BY` keys; NULLs first ascending and last descending, said only where a NULL
/// can be. Columns are qualified by the table: a bare name would order by a result column
/// of that name (`"feel"::text`) instead.
fn order_by(d: &dyn SqlDialect, table: &Table, keys: &[(Key<'_>, bool)]) -> String {
    keys.iter()
        .map(|&(key, desc)| {
            let dir = if desc { "DESC" } else { "ASC" };
            let nulls = match (key.nullable(), desc) {
                (false, _) => "",
                (true, false) => " NULLS FIRST",
                (true, true) => " NULLS LAST",
            };
            format!(
                "{} {dir}{nulls}",
                key.qualified_order_expr(d, Some(&table.name))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows strictly after `after` in the order of `keys`.
fn keyset<'t>(keys: &[(Key<'t>, bool)], after: &[Value], b: &mut Binds<'_, 't>) -> Result<String> {
    if keys.len() != after.len() {
        return Err(invalid_cursor());
    }
    let d = b.dialect;
    let solid = keys.iter().all(|(k, _)| !k.nullable()) && after.iter().all(|v| !v.is_null());
    let desc = keys.first().is_some_and(|(_, desc)| *desc);
    if solid && keys.iter().all(|(_, d)| *d == desc) {
        // One range over the keys' index: `(a, b) > ($1, $2)`.
        let exprs: Vec<String> = keys.iter().map(|(k, _)| k.order_expr(d)).collect();
        let values: Vec<String> = keys
            .iter()
            .zip(after)
            .map(|((k, _), v)| b.push(k.column(), v.clone(), Role::Cursor))
            .collect();
        let op = if desc { "<" } else { ">" };
        return Ok(if keys.len() == 1 {
            format!("{} {op} {}", exprs[0], values[0])
        } else {
            format!("({}) {op} ({})", exprs.join(", "), values.join(", "))
        });
    }
    // Otherwise: equal on the first i keys and after on key i, for some i, null-aware.
    let mut alternatives = Vec::with_capacity(keys.len());
    for (i, &(key, desc)) in keys.iter().enumerate() {
        let mut terms = Vec::with_capacity(i + 1);
        for (&(prev, _), value) in keys[..i].iter().zip(after) {
            terms.push(match value {
                Value::Null => prev.null_test(d, false),
                v => format!(
                    "{} = {}",
                    prev.order_expr(d),
                    b.push(prev.column(), v.clone(), Role::Cursor)
                ),
            });
        }
        let expr = key.order_expr(d);
        terms.push(match (desc, &after[i]) {
            (false, Value::Null) => key.null_test(d, true),
            (false, v) => format!("{expr} > {}", b.push(key.column(), v.clone(), Role::Cursor)),
            (true, Value::Null) => "FALSE".to_owned(),
            (true, v) if !key.nullable() => {
                format!("{expr} < {}", b.push(key.column(), v.clone(), Role::Cursor))
            }
            (true, v) => format!(
                "({expr} < {} OR {})",
                b.push(key.column(), v.clone(), Role::Cursor),
                key.null_test(d, false)
            ),
        });
        alternatives.push(format!("({})", terms.join(" AND ")));
    }
    // A bound on the first key lets an index on it start the scan at the cursor.
    let lead = match (keys.first(), after.first()) {
        (Some(&(key, desc)), Some(v)) if !key.nullable() && !v.is_null() => format!(
            "{} {} {} AND ",
            key.order_expr(d),
            if desc { "<=" } else { ">=" },
            b.push(key.column(), v.clone(), Role::Cursor)
        ),
        _ => String::new(),
    };
    Ok(format!("{lead}({})", alternatives.join(" OR ")))
}

pub(crate) fn invalid_cursor() -> Error {
    Error::InvalidFilter(
        "cursor: not a cursor of this listing (pass `next` back with the same filters and order)"
            .into(),
    )
}

/// A listing: its page statement and, with `count`, the statement that counts every
/// matching row.
pub struct ListStatements<'t> {
    pub page: Statement<'t>,
    pub count: Option<Statement<'t>>,
    /// Whether the ordering is stable across statements, so that a cursor can continue it.
    pub pageable: bool,
}

/// A page of `q` (one row more than the limit, to tell whether another page follows).
pub fn list<'t>(d: &dyn SqlDialect, table: &'t Table, q: &ListQuery) -> Result<ListStatements<'t>> {
    let (identity, identity_pageable) = d.row_identity();
    let keys: Vec<(Key<'t>, bool)> = q
        .order
        .iter()
        .map(|(name, desc)| {
            let key = table
                .column(name)
                .map_or(Key::Identity(identity), Key::Column);
            (key, *desc)
        })
        .collect();
    let pageable = identity_pageable || keys.iter().all(|(k, _)| k.column().is_some());
    let mut b = Binds::new(d);
    let filter_sql = where_clause(table, &q.filters, &mut b)?;
    let count = q.count.then(|| Statement {
        sql: Cow::Owned(format!(
            "SELECT count(*) FROM {} WHERE {filter_sql}",
            quote(&table.name)
        )),
        binds: b.binds.clone(),
        returns: Returns::Count,
    });
    let mut conditions = filter_sql;
    if let Some(after) = &q.after {
        if !pageable {
            return Err(invalid_cursor());
        }
        conditions = format!("{conditions} AND {}", keyset(&keys, after, &mut b)?);
    }
    let select: Vec<&Column> = q
        .select
        .iter()
        .map(|c| column(table, c))
        .collect::<Result<_>>()?;
    // Output columns, then the order keys the cursor needs.
    let mut exprs: Vec<String> = select.iter().map(|c| d.read_expr(c)).collect();
    let cursor_keys = if pageable { keys.len() } else { 0 };
    if pageable {
        exprs.extend(keys.iter().map(|(k, _)| k.cursor_expr(d)));
    }
    let limit = b.push(None, Value::Integer(q.limit as i64 + 1), Role::Limit);
    let sql = format!(
        "SELECT {} FROM {} WHERE {conditions} ORDER BY {} LIMIT {limit}",
        exprs.join(", "),
        quote(&table.name),
        order_by(d, table, &keys),
    );
    Ok(ListStatements {
        page: Statement {
            sql: Cow::Owned(sql),
            binds: b.binds,
            returns: Returns::Rows {
                columns: select,
                cursor_keys,
            },
        },
        count,
        pageable,
    })
}

/// The key column and bound key value of a `/{table}/{id}` path. A malformed id names no
/// row.
fn key_of<'t>(table: &'t Table, raw: &str) -> Result<(&'t Column, Value)> {
    let col = table.key().ok_or_else(|| {
        Error::InvalidInput(format!(
            "table {} has no single-column primary key to address rows by",
            table.name
        ))
    })?;
    let value = text_to_value(col, raw).map_err(|_| Error::RowNotFound)?;
    Ok((col, value))
}

/// `<key> = <placeholder>` for the row of a `/{table}/{id}` path. The key is bound first,
/// so an id that cannot be a key answers "no such row" before anything else is checked.
fn by_key<'t>(table: &'t Table, id: &str, b: &mut Binds<'_, 't>) -> Result<String> {
    let (key, value) = key_of(table, id)?;
    Ok(format!(
        "{} = {}",
        b.dialect.eq_expr(key),
        b.push(Some(key), value, Role::Key)
    ))
}

/// [`by_key`]'s condition when the key is the statement's only bound value.
fn key_condition(d: &dyn SqlDialect, key: &Column) -> String {
    format!(
        "{} = {}",
        d.eq_expr(key),
        d.placeholder(1, Some(key), Role::Key)
    )
}

fn key_bind(key: &Column, value: Value) -> Bind<'_> {
    Bind {
        column: Some(key),
        value,
        role: Role::Key,
    }
}

/// The statements on one row by key whose text depends only on the table.
#[derive(Debug, Clone, Copy)]
enum ByKey {
    Get,
    Delete,
}

/// Statement texts that depend only on the table and the dialect, written on first use
/// and kept with the table — so for as long as its schema version is cached — instead of
/// formatted again for every request (also the key of the executors' statement caches).
#[derive(Debug, Clone, Default)]
pub struct TableSql {
    /// By dialect (SQLite, PostgreSQL), then by [`ByKey`].
    by_key: [[OnceLock<String>; 2]; 2],
}

impl TableSql {
    fn by_key(&self, d: &dyn SqlDialect, which: ByKey, write: impl FnOnce() -> String) -> &str {
        let dialect = match d.dialect() {
            Dialect::Sqlite => 0,
            Dialect::Postgres => 1,
        };
        self.by_key[dialect][which as usize].get_or_init(write)
    }
}

/// One row by its primary key, every column.
pub fn get<'t>(d: &dyn SqlDialect, table: &'t Table, id: &str) -> Result<Statement<'t>> {
    let (key, value) = key_of(table, id)?;
    let sql = table.sql.by_key(d, ByKey::Get, || {
        format!(
            "SELECT {} FROM {} WHERE {}",
            read_list(d, &all_columns(table)),
            quote(&table.name),
            key_condition(d, key)
        )
    });
    Ok(Statement {
        sql: Cow::Borrowed(sql),
        binds: vec![key_bind(key, value)],
        returns: every_column(table),
    })
}

/// Checks an object's keys and converts its values, in the object's order; the values an
/// index would hold stay within [`MAX_INDEXED_BYTES`].
fn assignments<'t>(table: &'t Table, object: &Object) -> Result<Vec<(&'t Column, Value)>> {
    let values = object
        .iter()
        .map(|(name, value)| {
            let col = column(table, name)?;
            Ok((col, json_to_value(col, value)?))
        })
        .collect::<Result<Vec<_>>>()?;
    check_indexed_sizes(table, &values)?;
    Ok(values)
}

/// Refuses values whose bytes in the columns of one index exceed [`MAX_INDEXED_BYTES`],
/// naming the column with the longest of them.
fn check_indexed_sizes(table: &Table, values: &[(&Column, Value)]) -> Result<()> {
    let size = |v: &Value| match v {
        Value::Text(s) => s.len(),
        Value::Blob(b) => b.len(),
        Value::Null | Value::Integer(_) | Value::Real(_) => 0,
    };
    for index in &table.indexes {
        let sized = values
            .iter()
            .filter(|(c, _)| index.columns.contains(&c.name))
            .map(|(c, v)| (c, size(v)));
        let total: usize = sized.clone().map(|(_, n)| n).sum();
        if total > MAX_INDEXED_BYTES {
            let column = sized
                .max_by_key(|(_, n)| *n)
                .map_or_else(String::new, |(c, _)| c.name.clone());
            return Err(Error::ValueTooLong {
                column,
                table: table.name.clone(),
                limit: MAX_INDEXED_BYTES,
            });
        }
    }
    Ok(())
}

/// Inserts rows, generating UUIDv7 keys for text/UUID keys left out. Every row is checked
/// before any statement is built. Where the dialect allows `DEFAULT` among values, the
/// rows go in as few statements as its parameter limit allows, answered in the order
/// given; otherwise one statement a row. Run them in one transaction.
pub fn insert<'t>(
    d: &dyn SqlDialect,
    table: &'t Table,
    rows: &[Object],
) -> Result<Vec<Statement<'t>>> {
    if rows.is_empty() || rows.len() > MAX_INSERT_ROWS {
        return Err(Error::InvalidInput(format!(
            "insert 1 to {MAX_INSERT_ROWS} rows at a time"
        )));
    }
    let generated_key = table
        .key()
        .filter(|k| matches!(k.kind, ColumnType::Text | ColumnType::Uuid));
    let mut checked = Vec::with_capacity(rows.len());
    for object in rows {
        let mut values = assignments(table, object)?;
        if let Some(key) = generated_key {
            if !object.contains_key(&key.name) {
                values.push((key, Value::Text(uuid::Uuid::now_v7().to_string())));
            }
        }
        checked.push(values);
    }
    let returning = read_list(d, &all_columns(table));
    let into = quote(&table.name);
    let default_values = || Statement {
        sql: Cow::Owned(format!(
            "INSERT INTO {into} DEFAULT VALUES RETURNING {returning}"
        )),
        binds: Vec::new(),
        returns: every_column(table),
    };
    let mut statements = Vec::new();
    if !d.default_in_values() {
        for values in checked {
            if values.is_empty() {
                statements.push(default_values());
                continue;
            }
            let mut b = Binds::new(d);
            let names: Vec<String> = values.iter().map(|(c, _)| quote(&c.name)).collect();
            let cells: Vec<String> = values
                .into_iter()
                .map(|(c, v)| b.push(Some(c), v, Role::Value))
                .collect();
            statements.push(Statement {
                sql: Cow::Owned(format!(
                    "INSERT INTO {into} ({}) VALUES ({}) RETURNING {returning}",
                    names.join(", "),
                    cells.join(", ")
                )),
                binds: b.binds,
                returns: every_column(table),
            });
        }
        return Ok(statements);
    }
    // Every column some row names, in table order; a row without one takes its default.
    let columns: Vec<&Column> = table
        .columns
        .iter()
        .filter(|c| checked.iter().flatten().any(|(rc, _)| rc.name == c.name))
        .collect();
    if columns.is_empty() {
        return Ok(checked.iter().map(|_| default_values()).collect());
    }
    let names = columns
        .iter()
        .map(|c| quote(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    for chunk in checked.chunks((d.max_params() / columns.len()).max(1)) {
        let mut b = Binds::new(d);
        let mut tuples = Vec::with_capacity(chunk.len());
        for values in chunk {
            let cells: Vec<String> = columns
                .iter()
                .map(|c| match values.iter().find(|(vc, _)| vc.name == c.name) {
                    Some((vc, v)) => b.push(Some(vc), v.clone(), Role::Value),
                    None => "DEFAULT".to_owned(),
                })
                .collect();
            tuples.push(format!("({})", cells.join(", ")));
        }
        statements.push(Statement {
            sql: Cow::Owned(format!(
                "INSERT INTO {into} ({names}) VALUES {} RETURNING {returning}",
                tuples.join(", ")
            )),
            binds: b.binds,
            returns: every_column(table),
        });
    }
    Ok(statements)
}

/// A patch's assignments. A primary key column may only be named with the value it has.
fn set_values<'t>(
    table: &'t Table,
    patch: &Object,
    key: Option<(&Column, &Value)>,
) -> Result<Vec<(&'t Column, Value)>> {
    if patch.is_empty() {
        return Err(Error::InvalidInput(
            "nothing to update: send at least one column".into(),
        ));
    }
    let values = assignments(table, patch)?;
    for (c, v) in &values {
        let is_pk = table.primary_key.contains(&c.name);
        if is_pk && key.is_none_or(|(k, kv)| k.name != c.name || kv != v) {
            return Err(Error::InvalidValue {
                column: c.name.clone(),
                reason: "a primary key cannot change".into(),
            });
        }
    }
    Ok(values)
}

fn update_where<'t>(
    table: &'t Table,
    values: Vec<(&'t Column, Value)>,
    condition: &str,
    mut b: Binds<'_, 't>,
) -> Statement<'t> {
    let d = b.dialect;
    let set = values
        .into_iter()
        .map(|(c, v)| format!("{} = {}", quote(&c.name), b.push(Some(c), v, Role::Value)))
        .collect::<Vec<_>>()
        .join(", ");
    Statement {
        sql: Cow::Owned(format!(
            "UPDATE {} SET {set} WHERE {condition} RETURNING {}",
            quote(&table.name),
            read_list(d, &all_columns(table))
        )),
        binds: b.binds,
        returns: every_column(table),
    }
}

/// Updates one row by its primary key, answering the whole row.
pub fn update<'t>(
    d: &dyn SqlDialect,
    table: &'t Table,
    id: &str,
    patch: &Object,
) -> Result<Statement<'t>> {
    let (key, key_value) = key_of(table, id)?;
    let values = set_values(table, patch, Some((key, &key_value)))?;
    let mut b = Binds::new(d);
    let condition = by_key(table, id, &mut b)?;
    Ok(update_where(table, values, &condition, b))
}

/// Updates every row the filters match (at least one filter), answering them.
pub fn update_filtered<'t>(
    d: &dyn SqlDialect,
    table: &'t Table,
    filters: &[Filter],
    patch: &Object,
) -> Result<Statement<'t>> {
    require_filters(filters, "update")?;
    let values = set_values(table, patch, None)?;
    let mut b = Binds::new(d);
    let condition = where_clause(table, filters, &mut b)?;
    Ok(update_where(table, values, &condition, b))
}

/// Deletes one row by its primary key.
/// Counts the rows of `table` the filters match — or answers `-1` without counting when
/// the table's row count is known to be at most `bound` (a cheap upper bound where the
/// dialect has one for this table): a limit's check, which needs the count only near the
/// limit.
pub fn count_unless_below<'t>(
    d: &dyn SqlDialect,
    table: &'t Table,
    filters: &[Filter],
    bound: Option<i64>,
) -> Result<Statement<'t>> {
    let mut b = Binds::new(d);
    let conditions = where_clause(table, filters, &mut b)?;
    let name = quote(&table.name);
    // Without a filter, no WHERE: SQLite counts a whole table from its b-tree alone.
    let count = if filters.is_empty() {
        format!("SELECT count(*) FROM {name}")
    } else {
        format!("SELECT count(*) FROM {name} WHERE {conditions}")
    };
    let span = d.row_count_bound(&name).filter(|_| table.rowid);
    let sql = match (bound, span) {
        (Some(bound), Some(span)) => {
            let bound = b.push(None, Value::Integer(bound), Role::Limit);
            format!("SELECT CASE WHEN {span} <= {bound} THEN -1 ELSE ({count}) END")
        }
        _ => count,
    };
    Ok(Statement {
        sql: Cow::Owned(sql),
        binds: b.binds,
        returns: Returns::Count,
    })
}

/// The dialect's transaction lock on `key`, if it needs one.
pub fn transaction_lock<'t>(d: &dyn SqlDialect, key: i64) -> Option<Statement<'t>> {
    let sql = d.transaction_lock()?;
    Some(Statement {
        sql: Cow::Borrowed(sql),
        binds: vec![Bind {
            column: None,
            value: Value::Integer(key),
            role: Role::Limit,
        }],
        returns: Returns::Affected,
    })
}

pub fn delete<'t>(d: &dyn SqlDialect, table: &'t Table, id: &str) -> Result<Statement<'t>> {
    let (key, value) = key_of(table, id)?;
    let sql = table.sql.by_key(d, ByKey::Delete, || {
        format!(
            "DELETE FROM {} WHERE {}",
            quote(&table.name),
            key_condition(d, key)
        )
    });
    Ok(Statement {
        sql: Cow::Borrowed(sql),
        binds: vec![key_bind(key, value)],
        returns: Returns::Affected,
    })
}

/// Deletes every row the filters match (at least one filter).
pub fn delete_filtered<'t>(
    d: &dyn SqlDialect,
    table: &'t Table,
    filters: &[Filter],
) -> Result<Statement<'t>> {
    require_filters(filters, "delete")?;
    let mut b = Binds::new(d);
    let condition = where_clause(table, filters, &mut b)?;
    Ok(Statement {
        sql: Cow::Owned(format!(
            "DELETE FROM {} WHERE {condition}",
            quote(&table.name)
        )),
        binds: b.binds,
        returns: Returns::Affected,
    })
}
