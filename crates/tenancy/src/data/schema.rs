//! Introspection of a tenant schema: its tables, columns, types and keys.
//!
//! One tenant schema version has one shape, so the result is cached per version by the
//! engine and never read per request.

use std::collections::BTreeMap;

use rusqlite::Connection;
use serde::Serialize;

use crate::error::{Error, Result};

/// How the data API treats a column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Integer,
    Real,
    Text,
    Boolean,
    /// RFC 3339 in JSON.
    Timestamp,
    Json,
    Uuid,
    /// Base64 in JSON.
    Bytes,
}

impl ColumnType {
    /// From a declared SQL type, by the names both dialects use.
    pub fn from_declared(declared: &str) -> ColumnType {
        let t = declared.trim().to_ascii_uppercase();
        let base = t.split(['(', ' ']).next().unwrap_or("");
        match base {
            "BOOLEAN" | "BOOL" => ColumnType::Boolean,
            "TIMESTAMP" | "TIMESTAMPTZ" | "DATETIME" | "DATE" => ColumnType::Timestamp,
            "JSON" | "JSONB" => ColumnType::Json,
            "UUID" => ColumnType::Uuid,
            "BLOB" | "BYTEA" => ColumnType::Bytes,
            _ if t.contains("INT") => ColumnType::Integer,
            _ if t.contains("REAL")
                || t.contains("FLOA")
                || t.contains("DOUB")
                || t.contains("NUMERIC")
                || t.contains("DECIMAL") =>
            {
                ColumnType::Real
            }
            _ => ColumnType::Text,
        }
    }

    pub fn json_schema(self) -> serde_json::Value {
        use serde_json::json;
        match self {
            ColumnType::Integer => json!({ "type": "integer", "format": "int64" }),
            ColumnType::Real => json!({ "type": "number", "format": "double" }),
            ColumnType::Text => json!({ "type": "string" }),
            ColumnType::Boolean => json!({ "type": "boolean" }),
            ColumnType::Timestamp => json!({ "type": "string", "format": "date-time" }),
            ColumnType::Json => json!({}),
            ColumnType::Uuid => json!({ "type": "string", "format": "uuid" }),
            ColumnType::Bytes => json!({ "type": "string", "format": "byte" }),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
    pub nullable: bool,
    pub has_default: bool,
    pub primary_key: bool,
}

/// A unique constraint, for naming violations.
#[derive(Debug, Clone, Serialize)]
pub struct UniqueKey {
    pub name: String,
    pub columns: Vec<String>,
}

/// An index on plain columns (primary, unique or not): its key columns, in order.
#[derive(Debug, Clone, Serialize)]
pub struct IndexKey {
    pub name: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    /// Primary key columns, in key order.
    pub primary_key: Vec<String>,
    #[serde(skip)]
    pub unique: Vec<UniqueKey>,
    /// Every index, for the bound on what a row puts in one.
    #[serde(skip)]
    pub indexes: Vec<IndexKey>,
    /// Statements written once for this table.
    #[serde(skip)]
    pub(crate) sql: crate::sql::builder::TableSql,
    /// A SQLite table with a `rowid` (not `WITHOUT ROWID`): its span of rowids bounds its
    /// row count in O(log n).
    #[serde(skip)]
    pub rowid: bool,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The single-column primary key the data API addresses rows by.
    pub fn key(&self) -> Option<&Column> {
        match self.primary_key.as_slice() {
            [one] => self.column(one),
            _ => None,
        }
    }
}

/// Every table the data API exposes: not internal (`_…`), not SQLite's own.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Schema {
    pub version: i64,
    pub tables: BTreeMap<String, Table>,
}

impl Schema {
    pub fn table(&self, name: &str) -> Result<&Table> {
        self.tables.get(name).ok_or_else(|| Error::TableNotFound {
            table: printable(name),
        })
    }
}

/// Introspected tenant schemas by shape of store (`sqlite`, `pg-schema`, …) and schema
/// version: tenants of one shape and version share one, so it is read once.
#[derive(Default)]
pub struct SchemaCache {
    schemas:
        std::sync::RwLock<std::collections::HashMap<(&'static str, i64), std::sync::Arc<Schema>>>,
}

impl SchemaCache {
    pub fn get(&self, shape: &'static str, version: i64) -> Option<std::sync::Arc<Schema>> {
        self.schemas.read().ok()?.get(&(shape, version)).cloned()
    }

    /// Keeps `schema` (or the one another task kept first) and answers it.
    pub fn insert(
        &self,
        shape: &'static str,
        version: i64,
        schema: Schema,
    ) -> std::sync::Arc<Schema> {
        let schema = std::sync::Arc::new(schema);
        match self.schemas.write() {
            Ok(mut map) => std::sync::Arc::clone(map.entry((shape, version)).or_insert(schema)),
            Err(_) => schema,
        }
    }
}

/// A name safe to echo back in an error: printable ASCII, at most 64 characters.
pub fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Reads the schema of a tenant database.
pub fn introspect(conn: &Connection, version: i64) -> Result<Schema> {
    let db = |e: rusqlite::Error| Error::TenantDb(e.to_string());
    let mut names: Vec<String> = Vec::new();
    {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .map_err(db)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
        for name in rows {
            let name = name.map_err(db)?;
            if !name.starts_with('_') && !name.starts_with("sqlite_") {
                names.push(name);
            }
        }
    }
    let mut tables = BTreeMap::new();
    for name in names {
        let quoted = quote(&name);
        let mut columns = Vec::new();
        let mut pk: Vec<(i64, String)> = Vec::new();
        {
            let mut stmt = conn
                .prepare(&format!("PRAGMA table_info({quoted})"))
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, bool>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .map_err(db)?;
            for row in rows {
                let (col, declared, notnull, default, pk_pos) = row.map_err(db)?;
                if pk_pos > 0 {
                    pk.push((pk_pos, col.clone()));
                }
                columns.push(Column {
                    kind: ColumnType::from_declared(&declared),
                    nullable: !notnull && pk_pos == 0,
                    has_default: default.is_some(),
                    primary_key: pk_pos > 0,
                    name: col,
                });
            }
        }
        pk.sort();
        let (unique, indexes) = index_keys(conn, &name).map_err(db)?;
        let primary_key: Vec<String> = pk.into_iter().map(|(_, c)| c).collect();
        let without_rowid: bool = conn
            .query_row(
                "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
                [&name],
                |r| r.get(0),
            )
            .map_err(db)?;
        tables.insert(
            name.clone(),
            Table {
                name,
                columns,
                primary_key,
                unique,
                indexes,
                sql: Default::default(),
                rowid: !without_rowid,
            },
        );
    }
    Ok(Schema { version, tables })
}

/// The unique keys and every index of a table, on plain columns (an index on an
/// expression is left out, as on PostgreSQL).
fn index_keys(conn: &Connection, table: &str) -> rusqlite::Result<(Vec<UniqueKey>, Vec<IndexKey>)> {
    let mut stmt = conn.prepare(&format!("PRAGMA index_list({})", quote(table)))?;
    let listed: Vec<(String, bool, String)> = stmt
        .query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let (mut keys, mut indexes) = (Vec::new(), Vec::new());
    for (index, unique, origin) in listed {
        let mut stmt = conn.prepare(&format!("PRAGMA index_info({})", quote(&index)))?;
        let columns: Option<Vec<String>> = stmt
            .query_map([], |r| r.get::<_, Option<String>>(2))?
            .collect::<rusqlite::Result<_>>()?;
        let Some(columns) = columns else {
            continue;
        };
        indexes.push(IndexKey {
            name: index.clone(),
            columns: columns.clone(),
        });
        if !unique {
            continue;
        }
        // SQLite forgets the names of inline constraints; name them as PostgreSQL does.
        let name = match origin.as_str() {
            "c" => index,
            "pk" => format!("{table}_pkey"),
            _ => format!("{table}_{}_key", columns.join("_")),
        };
        keys.push(UniqueKey { name, columns });
    }
    Ok((keys, indexes))
}

/// Quotes an identifier that came from the database's own catalog.
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}
