//! Route handlers, one module per resource.

pub mod health;
pub mod tenants;
