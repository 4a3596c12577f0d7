//! SQL for the data API, once for every dialect: [`builder`] turns a parsed request into
//! statements (SQL text plus bound values); [`dialect`] describes what each dialect spells
//! differently. Executors in [`crate::data`] only run them.

pub mod builder;
pub mod dialect;

pub use builder::{Bind, Returns, Role, Statement};
pub use dialect::{Postgres, SqlDialect, Sqlite};
