//! The data API's engine half: introspection, the query language, values, and the
//! operations, written once ([`ops`], with [`crate::sql`]) and run by one executor per
//! dialect ([`sqlite`], [`postgres`]). HTTP routes in `tenancy-http` call these through
//! [`crate::Engine`].

pub mod ops;
pub mod postgres;
pub mod query;
pub mod schema;
pub mod sqlite;
pub mod value;

use serde_json::{Map, Value};

pub use crate::sql::builder::{MAX_INDEXED_BYTES, MAX_INSERT_ROWS};
pub use ops::{DataOp, DataOutput};
pub use query::{parse_filters, parse_list, ListQuery};
pub use schema::{Column, ColumnType, Schema, Table};

/// A row as JSON.
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
