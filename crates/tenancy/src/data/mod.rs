//! The data API's engine half: introspection, the query language, values, operations.
//! HTTP routes in `tenancy-http` call these through [`crate::Engine`].

pub mod exec;
pub mod pg;
pub mod query;
pub mod schema;
pub mod value;

pub use exec::{Object, Page, MAX_INSERT_ROWS};
pub use query::{parse_filters, parse_list, ListQuery};
pub use schema::{Column, ColumnType, Schema, Table};
