//! The catalog on PostgreSQL.
