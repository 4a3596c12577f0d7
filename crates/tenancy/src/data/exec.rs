//! Data operations on one tenant database. Each runs on the blocking thread that holds the
//! tenant's connection; writes are one transaction each.

use rusqlite::types::Value as Sql;
use rusqlite::{params_from_iter, Connection, ErrorCode, Row, TransactionBehavior};
use serde_json::{Map, Value};

use super::query::{encode_cursor, keyset_clause, order_by, where_clause, Filter, ListQuery};
use super::schema::{quote, ColumnType, Table};
use super::value::{json_to_sql, sql_to_cursor, sql_to_json, text_to_sql};
use crate::error::{Error, Result};

pub type Object = Map<String, Value>;

/// A page of rows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page {
    pub data: Vec<Object>,
    /// Pass back as `cursor` for the next page; `null` on the last one.
    pub next: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
}

pub const MAX_INSERT_ROWS: usize = 1000;

fn row_object(table: &Table, row: &Row<'_>, columns: &[String]) -> rusqlite::Result<Object> {
    let mut object = Map::with_capacity(columns.len());
    for (i, name) in columns.iter().enumerate() {
        if let Some(col) = table.column(name) {
            object.insert(name.clone(), sql_to_json(col, row.get_ref(i)?));
        }
    }
    Ok(object)
}

fn all_columns(table: &Table) -> Vec<String> {
    table.columns.iter().map(|c| c.name.clone()).collect()
}

fn select_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| {
            if c == "rowid" {
                "rowid".to_owned()
            } else {
                quote(c)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
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

pub fn list(conn: &Connection, table: &Table, q: &ListQuery) -> Result<Page> {
    let mut params = Vec::new();
    let mut conditions = where_clause(&q.filters, &mut params);
    let filter_params = params.clone();
    let filter_sql = conditions.clone();
    if let Some(after) = &q.after {
        conditions = format!(
            "{conditions} AND {}",
            keyset_clause(&q.order, after, &mut params)
        );
    }
    // Output columns, then the order keys the cursor needs.
    let mut columns = q.select.clone();
    let key_start = columns.len();
    columns.extend(q.order.iter().map(|(c, _)| c.clone()));
    let sql = format!(
        "SELECT {} FROM {} WHERE {conditions} ORDER BY {} LIMIT {}",
        select_list(&columns),
        quote(&table.name),
        order_by(&q.order),
        q.limit + 1
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(|e| db_error(table, e))?;
    let mut rows = stmt
        .query(params_from_iter(params))
        .map_err(|e| db_error(table, e))?;
    let mut data = Vec::new();
    let mut last_keys = None;
    let mut more = false;
    while let Some(row) = rows.next().map_err(|e| db_error(table, e))? {
        if data.len() == q.limit {
            more = true;
            break;
        }
        data.push(row_object(table, row, &q.select).map_err(|e| db_error(table, e))?);
        last_keys = Some(
            (key_start..columns.len())
                .map(|i| row.get_ref(i).map(sql_to_cursor))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| db_error(table, e))?,
        );
    }
    let next = match (more, last_keys) {
        (true, Some(keys)) => Some(encode_cursor(&q.fingerprint, keys)),
        _ => None,
    };
    let count = if q.count {
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE {filter_sql}",
            quote(&table.name)
        );
        Some(
            conn.query_row(&sql, params_from_iter(filter_params), |r| r.get(0))
                .map_err(|e| db_error(table, e))?,
        )
    } else {
        None
    };
    Ok(Page { data, next, count })
}

/// The key column and the bound key value of a `/{table}/{id}` path. A malformed id names
/// no row.
fn key_of(table: &Table, raw: &str) -> Result<(String, Sql)> {
    let col = table.key().ok_or_else(|| {
        Error::InvalidInput(format!(
            "table {} has no single-column primary key to address rows by",
            table.name
        ))
    })?;
    let value = text_to_sql(col, raw).map_err(|_| Error::RowNotFound)?;
    Ok((col.name.clone(), value))
}

pub fn get(conn: &Connection, table: &Table, id: &str) -> Result<Object> {
    let (_, value) = key_of(table, id)?;
    let sql = table.select_by_key.as_deref().ok_or(Error::RowNotFound)?;
    let mut stmt = conn.prepare_cached(sql).map_err(|e| db_error(table, e))?;
    let mut rows = stmt.query([value]).map_err(|e| db_error(table, e))?;
    match rows.next().map_err(|e| db_error(table, e))? {
        Some(row) => all_columns_object(table, row).map_err(|e| db_error(table, e)),
        None => Err(Error::RowNotFound),
    }
}

/// A row selected with every column, in table order.
fn all_columns_object(table: &Table, row: &Row<'_>) -> rusqlite::Result<Object> {
    let mut object = Map::with_capacity(table.columns.len());
    for (i, col) in table.columns.iter().enumerate() {
        object.insert(col.name.clone(), sql_to_json(col, row.get_ref(i)?));
    }
    Ok(object)
}

/// Checks an object's keys and converts its values, in column order.
fn assignments(table: &Table, object: &Object) -> Result<Vec<(String, Sql)>> {
    let mut out = Vec::with_capacity(object.len());
    for (name, value) in object {
        let col = table.column(name).ok_or_else(|| Error::ColumnNotFound {
            column: super::schema::printable(name),
        })?;
        out.push((col.name.clone(), json_to_sql(col, value)?));
    }
    Ok(out)
}

/// Inserts rows atomically, generating UUIDv7 keys for text/UUID keys left out.
pub fn insert(conn: &mut Connection, table: &Table, rows: &[Object]) -> Result<Vec<Object>> {
    if rows.is_empty() || rows.len() > MAX_INSERT_ROWS {
        return Err(Error::InvalidInput(format!(
            "insert 1 to {MAX_INSERT_ROWS} rows at a time"
        )));
    }
    let generated_key = table
        .key()
        .filter(|k| matches!(k.kind, ColumnType::Text | ColumnType::Uuid))
        .map(|k| k.name.clone());
    let columns = all_columns(table);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| db_error(table, e))?;
    let mut created = Vec::with_capacity(rows.len());
    for object in rows {
        let mut values = assignments(table, object)?;
        if let Some(key) = &generated_key {
            if !object.contains_key(key) {
                values.push((key.clone(), Sql::Text(uuid::Uuid::now_v7().to_string())));
            }
        }
        let sql = if values.is_empty() {
            format!(
                "INSERT INTO {} DEFAULT VALUES RETURNING {}",
                quote(&table.name),
                select_list(&columns)
            )
        } else {
            format!(
                "INSERT INTO {} ({}) VALUES ({}) RETURNING {}",
                quote(&table.name),
                values
                    .iter()
                    .map(|(c, _)| quote(c))
                    .collect::<Vec<_>>()
                    .join(", "),
                vec!["?"; values.len()].join(", "),
                select_list(&columns)
            )
        };
        let mut stmt = tx.prepare_cached(&sql).map_err(|e| db_error(table, e))?;
        let row = stmt
            .query_row(params_from_iter(values.into_iter().map(|(_, v)| v)), |r| {
                row_object(table, r, &columns)
            })
            .map_err(|e| db_error(table, e))?;
        created.push(row);
    }
    tx.commit().map_err(|e| db_error(table, e))?;
    Ok(created)
}

fn set_clause(
    table: &Table,
    patch: &Object,
    key: Option<(&str, &Sql)>,
) -> Result<Vec<(String, Sql)>> {
    if patch.is_empty() {
        return Err(Error::InvalidInput(
            "nothing to update: send at least one column".into(),
        ));
    }
    let values = assignments(table, patch)?;
    for (c, v) in &values {
        let is_pk = table.primary_key.contains(c);
        if is_pk && key.is_none_or(|(k, kv)| k != c || kv != v) {
            return Err(Error::InvalidValue {
                column: c.clone(),
                reason: "a primary key cannot change".into(),
            });
        }
    }
    Ok(values)
}

pub fn update(conn: &mut Connection, table: &Table, id: &str, patch: &Object) -> Result<Object> {
    let (key, key_value) = key_of(table, id)?;
    let values = set_clause(table, patch, Some((&key, &key_value)))?;
    let mut rows = update_where(
        conn,
        table,
        &values,
        &format!("{} = ?", quote(&key)),
        vec![key_value],
    )?;
    rows.pop().ok_or(Error::RowNotFound)
}

pub fn update_filtered(
    conn: &mut Connection,
    table: &Table,
    filters: &[Filter],
    patch: &Object,
) -> Result<Vec<Object>> {
    super::query::require_filters(filters, "update")?;
    let values = set_clause(table, patch, None)?;
    let mut params = Vec::new();
    let condition = where_clause(filters, &mut params);
    update_where(conn, table, &values, &condition, params)
}

fn update_where(
    conn: &mut Connection,
    table: &Table,
    values: &[(String, Sql)],
    condition: &str,
    condition_params: Vec<Sql>,
) -> Result<Vec<Object>> {
    let columns = all_columns(table);
    let sql = format!(
        "UPDATE {} SET {} WHERE {condition} RETURNING {}",
        quote(&table.name),
        values
            .iter()
            .map(|(c, _)| format!("{} = ?", quote(c)))
            .collect::<Vec<_>>()
            .join(", "),
        select_list(&columns)
    );
    let params: Vec<Sql> = values
        .iter()
        .map(|(_, v)| v.clone())
        .chain(condition_params)
        .collect();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| db_error(table, e))?;
    let rows = {
        let mut stmt = tx.prepare_cached(&sql).map_err(|e| db_error(table, e))?;
        let rows = stmt
            .query_map(params_from_iter(params), |r| row_object(table, r, &columns))
            .map_err(|e| db_error(table, e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| db_error(table, e))?;
        rows
    };
    tx.commit().map_err(|e| db_error(table, e))?;
    Ok(rows)
}

pub fn delete(conn: &mut Connection, table: &Table, id: &str) -> Result<()> {
    let (key, value) = key_of(table, id)?;
    let n = delete_where(conn, table, &format!("{} = ?", quote(&key)), vec![value])?;
    if n == 0 {
        Err(Error::RowNotFound)
    } else {
        Ok(())
    }
}

pub fn delete_filtered(conn: &mut Connection, table: &Table, filters: &[Filter]) -> Result<usize> {
    super::query::require_filters(filters, "delete")?;
    let mut params = Vec::new();
    let condition = where_clause(filters, &mut params);
    delete_where(conn, table, &condition, params)
}

fn delete_where(
    conn: &mut Connection,
    table: &Table,
    condition: &str,
    params: Vec<Sql>,
) -> Result<usize> {
    let sql = format!("DELETE FROM {} WHERE {condition}", quote(&table.name));
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| db_error(table, e))?;
    let n = tx
        .execute(&sql, params_from_iter(params))
        .map_err(|e| db_error(table, e))?;
    tx.commit().map_err(|e| db_error(table, e))?;
    Ok(n)
}
