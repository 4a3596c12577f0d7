//! The data API on PostgreSQL.
