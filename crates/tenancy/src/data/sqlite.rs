//! Runs the data API's statements on one SQLite tenant database: binding, decoding, and
//! naming violated constraints. Each runs on the blocking thread that holds the tenant's
//! connection; a write is one `IMMEDIATE` transaction.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::SecondsFormat;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params_from_iter, Connection, ErrorCode, ToSql};
use serde_json::{Map, Value as Json};

use super::ops::{DataOp, DataOutput, Outcome, Plan, Row, RowGuard};
use super::query::{Filter, ListQuery};
use super::schema::{ColumnType, Table};
use super::value::{parse_timestamp, whole_second_rfc3339, Value};
use super::{Column, Object, Page};
use crate::error::{Error, Result};
use crate::sql::{Returns, Sqlite, Statement};

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// A stored value as JSON, by its column's type.
fn to_json(column: &Column, value: ValueRef<'_>) -> Json {
    match (column.kind, value) {
        (_, ValueRef::Null) => Json::Null,
        (ColumnType::Boolean, ValueRef::Integer(i)) => Json::Bool(i != 0),
        (ColumnType::Timestamp, ValueRef::Text(t)) => {
            Json::String(whole_second_rfc3339(t).unwrap_or_else(|| timestamp_text(t)))
        }
        (ColumnType::Json, ValueRef::Text(t) | ValueRef::Blob(t)) => serde_json::from_slice(t)
            .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(t).into_owned())),
        (_, ValueRef::Integer(i)) => Json::from(i),
        (_, ValueRef::Real(f)) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        (_, ValueRef::Text(t)) => Json::String(String::from_utf8_lossy(t).into_owned()),
        (_, ValueRef::Blob(b)) => Json::String(STANDARD.encode(b)),
    }
}

/// A stored timestamp in RFC 3339, as stored if it does not parse.
fn timestamp_text(t: &[u8]) -> String {
    let s = String::from_utf8_lossy(t);
    match parse_timestamp(&s) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => s.into_owned(),
    }
}

/// A stored value as a cursor holds it, so that it binds back exactly.
fn to_cursor(value: ValueRef<'_>) -> Json {
    use serde_json::json;
    match value {
        ValueRef::Null => Json::Null,
        ValueRef::Integer(i) => json!({ "i": i }),
        // The exact bits: a decimal rendering could land one step off and break keyset order.
        ValueRef::Real(f) => json!({ "r": f.to_bits() }),
        ValueRef::Text(t) => json!({ "t": String::from_utf8_lossy(t) }),
        ValueRef::Blob(b) => json!({ "b": STANDARD.encode(b) }),
    }
}

/// Maps SQLite's errors: constraint failures name their constraint, a full disk is
/// [`Error::StorageFull`] (the write's transaction rolls back); the rest are internal.
pub fn db_error(table: &Table, e: rusqlite::Error) -> Error {
    if crate::error::is_sqlite_full(&e) {
        return Error::StorageFull {
            context: format!("writing to table {}", table.name),
        };
    }
    if let rusqlite::Error::SqliteFailure(f, Some(message)) = &e {
        if f.code == ErrorCode::ConstraintViolation {
            let detail = message.split_once(": ").map(|(_, d)| d).unwrap_or("");
            let ext = f.extended_code;
            let constraint = if ext == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || ext == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            {
                let cols: Vec<&str> = detail
                    .split(", ")
                    .filter_map(|c| c.split_once('.').map(|(_, col)| col))
                    .collect();
                table
                    .unique
                    .iter()
                    .find(|u| {
                        u.columns
                            .iter()
                            .map(String::as_str)
                            .eq(cols.iter().copied())
                    })
                    .map(|u| u.name.clone())
                    .unwrap_or_else(|| format!("{}_{}_key", table.name, cols.join("_")))
            } else if ext == rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL {
                let column = detail.split_once('.').map(|(_, c)| c).unwrap_or(detail);
                return Error::InvalidValue {
                    column: column.to_owned(),
                    reason: "it cannot be null".into(),
                };
            } else if ext == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY {
                format!("{}_fkey", table.name)
            } else {
                detail.to_owned()
            };
            let kind = match ext {
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => "unique",
                rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => "foreign key",
                rusqlite::ffi::SQLITE_CONSTRAINT_CHECK => "check",
                _ => "constraint",
            };
            return Error::ConstraintViolation {
                constraint,
                detail: format!("{kind} constraint on {} refused the change", table.name),
            };
        }
    }
    Error::TenantDb(e.to_string())
}

fn run_one(conn: &Connection, statement: &Statement<'_>) -> rusqlite::Result<Outcome> {
    let mut stmt = conn.prepare_cached(&statement.sql)?;
    let params = params_from_iter(statement.binds.iter().map(|b| &b.value));
    Ok(match &statement.returns {
        Returns::Affected => Outcome::Affected(stmt.execute(params)? as u64),
        Returns::Count => Outcome::Count(stmt.query_row(params, |r| r.get(0))?),
        Returns::Rows {
            columns,
            cursor_keys,
        } => {
            let mut rows = stmt.query(params)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let mut object = Map::with_capacity(columns.len());
                for (i, col) in columns.iter().enumerate() {
                    object.insert(col.name.clone(), to_json(col, row.get_ref(i)?));
                }
                let cursor = (columns.len()..columns.len() + cursor_keys)
                    .map(|i| row.get_ref(i).map(to_cursor))
                    .collect::<rusqlite::Result<_>>()?;
                out.push(Row { object, cursor });
            }
            Outcome::Rows(out)
        }
    })
}

/// Runs the plan's statements in order: a lone read as it is, anything else in one
/// `IMMEDIATE` transaction (which excludes every other writer of the database), whose
/// outcomes must pass the plan's check before it commits; rolled back on the first error.
fn run(conn: &Connection, table: &Table, plan: &Plan<'_>) -> Result<Vec<Outcome>> {
    let err = |e| db_error(table, e);
    if let [statement] = &plan.statements[..] {
        if statement.sql.starts_with("SELECT") {
            return Ok(vec![run_one(conn, statement).map_err(err)?]);
        }
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
    let outcomes = plan
        .statements
        .iter()
        .map(|s| run_one(conn, s))
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(err)
        .and_then(|outcomes| plan.check(&outcomes).map(|()| outcomes))
        .and_then(|outcomes| conn.execute_batch("COMMIT").map(|()| outcomes).map_err(err));
    if outcomes.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    outcomes
}

/// Runs one data operation on the tenant database, keeping `guards`.
pub fn execute(
    conn: &Connection,
    table: &Table,
    op: &DataOp,
    guards: &[RowGuard],
) -> Result<DataOutput> {
    let plan = Plan::guarded(&Sqlite, table, op, guards)?;
    let outcomes = run(conn, table, &plan)?;
    plan.finish(outcomes)
}

/// SQLite's plan for a statement (`EXPLAIN QUERY PLAN`), one line a step.
pub fn explain(conn: &Connection, table: &Table, statement: &Statement<'_>) -> Result<Vec<String>> {
    let err = |e| db_error(table, e);
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {}", statement.sql))
        .map_err(err)?;
    let rows = stmt
        .query_map(
            params_from_iter(statement.binds.iter().map(|b| &b.value)),
            |r| r.get::<_, String>(3),
        )
        .map_err(err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(err)
}

/// Runs one statement of the application's own (`$n` placeholders): a read as it is, a
/// write in one `IMMEDIATE` transaction; the rows it answers, each value as JSON by its
/// stored type. Several statements in one text are refused.
pub fn query(conn: &Connection, sql: &str, params: &[Value]) -> Result<Vec<Object>> {
    let err = |e: rusqlite::Error| match crate::error::is_sqlite_full(&e) {
        true => Error::StorageFull {
            context: "running a statement".into(),
        },
        false => match e {
            rusqlite::Error::MultipleStatement => {
                Error::InvalidInput("one statement at a time".into())
            }
            rusqlite::Error::SqliteFailure(f, Some(message))
                if f.code == ErrorCode::ConstraintViolation =>
            {
                Error::ConstraintViolation {
                    constraint: message
                        .split_once(": ")
                        .map_or(message.as_str(), |(_, c)| c)
                        .to_owned(),
                    detail: "a constraint refused the change".into(),
                }
            }
            rusqlite::Error::SqliteFailure(_, Some(message))
            | rusqlite::Error::SqlInputError { msg: message, .. } => {
                Error::InvalidInput(format!("the statement failed: {message}"))
            }
            rusqlite::Error::InvalidParameterCount(given, wanted) => Error::InvalidInput(format!(
                "the statement takes {wanted} parameters, {given} were given"
            )),
            e => Error::TenantDb(e.to_string()),
        },
    };
    let sql = crate::sql::dialect::numbered_for_sqlite(sql);
    let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
    let writes = !stmt.readonly();
    if writes {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
    }
    let names: Vec<String> = stmt.column_names().iter().map(|n| n.to_string()).collect();
    let rows = (|| {
        let mut rows = stmt.query(params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut object = Map::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                let value = match row.get_ref(i)? {
                    ValueRef::Null => Json::Null,
                    ValueRef::Integer(n) => Json::from(n),
                    ValueRef::Real(f) => {
                        serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
                    }
                    ValueRef::Text(t) => Json::String(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Json::String(STANDARD.encode(b)),
                };
                object.insert(name.clone(), value);
            }
            out.push(object);
        }
        Ok(out)
    })();
    drop(stmt);
    let rows = match (rows, writes) {
        (Ok(rows), true) => conn.execute_batch("COMMIT").map(|()| rows),
        (rows, _) => rows,
    };
    rows.map_err(|e| {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        err(e)
    })
}

// The operations one at a time, for callers that hold a connection of their own.

pub fn list(conn: &Connection, table: &Table, q: &ListQuery) -> Result<Page> {
    execute(conn, table, &DataOp::List(q.clone()), &[])?.into_page()
}

pub fn get(conn: &Connection, table: &Table, id: &str) -> Result<Object> {
    execute(conn, table, &DataOp::Get(id.to_owned()), &[])?.into_row()
}

pub fn insert(conn: &Connection, table: &Table, rows: &[Object]) -> Result<Vec<Object>> {
    execute(conn, table, &DataOp::Insert(rows.to_vec()), &[])?.into_rows()
}

pub fn update(conn: &Connection, table: &Table, id: &str, patch: &Object) -> Result<Object> {
    execute(
        conn,
        table,
        &DataOp::Update(id.to_owned(), patch.clone()),
        &[],
    )?
    .into_row()
}

pub fn update_filtered(
    conn: &Connection,
    table: &Table,
    filters: &[Filter],
    patch: &Object,
) -> Result<Vec<Object>> {
    let op = DataOp::UpdateFiltered(filters.to_vec(), patch.clone());
    execute(conn, table, &op, &[])?.into_rows()
}

pub fn delete(conn: &Connection, table: &Table, id: &str) -> Result<()> {
    execute(conn, table, &DataOp::Delete(id.to_owned()), &[]).map(|_| ())
}

pub fn delete_filtered(conn: &Connection, table: &Table, filters: &[Filter]) -> Result<usize> {
    execute(conn, table, &DataOp::DeleteFiltered(filters.to_vec()), &[])?.into_deleted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_as_rfc3339() {
        let ts = Column {
            name: "c".into(),
            kind: ColumnType::Timestamp,
            nullable: false,
            has_default: false,
            primary_key: false,
        };
        assert_eq!(
            to_json(&ts, ValueRef::Text(b"2026-01-31 17:00:00")),
            serde_json::json!("2026-01-31T17:00:00Z")
        );
    }

    #[test]
    fn whole_seconds_read_as_the_general_path_reads_them() {
        let samples = [
            "2026-01-31 17:00:00",
            "0000-01-01 00:00:00",
            "9999-12-31 23:59:59",
            "2024-02-29 12:34:56",
            "2023-02-29 12:34:56",
            "2026-13-01 00:00:00",
            "2026-00-10 00:00:00",
            "2026-04-31 00:00:00",
            "2026-01-31 24:00:00",
            "2026-01-31 23:60:00",
            "2026-01-31 23:59:60",
            "2026-01-31T17:00:00",
            "2026-01-31 17:00:0x",
            "+026-01-31 17:00:00",
            "2026-1-31 17:00:00 ",
            "2026-01-31 17:00:00.5",
            "2026-01-31T17:00:00+02:00",
            "not a time",
            "",
        ];
        for s in samples {
            if let Some(fast) = whole_second_rfc3339(s.as_bytes()) {
                assert_eq!(fast, timestamp_text(s.as_bytes()), "{s}");
            }
        }
        assert_eq!(
            whole_second_rfc3339(b"2024-02-29 12:34:56").as_deref(),
            Some("2024-02-29T12:34:56Z")
        );
        for refused in [
            "2023-02-29 12:34:56",
            "2026-01-31 23:59:60",
            "2026-01-31T17:00:00",
        ] {
            assert_eq!(whole_second_rfc3339(refused.as_bytes()), None, "{refused}");
        }
    }
}
