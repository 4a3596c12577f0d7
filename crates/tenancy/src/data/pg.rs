//! The data API on PostgreSQL: the operations of [`super::exec`], answering the same JSON
//! and the same errors, run in a transaction the caller opened (with the tenant context
//! set: `search_path` or `tenancy.tenant_id`) and commits. Table names are never
//! schema-qualified.
//!
//! **Typing.** Every statement is prepared first, and PostgreSQL infers each parameter's
//! type from the column it meets. A value is checked against its column's [`ColumnType`]
//! by [`super::value`] exactly as on SQLite, then converted in Rust to that parameter's
//! type, so a value that does not fit the real column (`int4` overflow, a NUL in `text`,
//! …) is refused, naming its column, before any statement runs. Results are decoded by
//! their type. Types the data API reads as text (enums, `interval`, …) are selected as
//! `::text` and bound in their text input form.
//!
//! **Same answers as SQLite.** Text compares and sorts byte-wise (`COLLATE "C"`, SQLite's
//! `BINARY`) whatever the database's collation; `like` folds ASCII letters only and has
//! no escape character; integers compare as 64-bit whatever the column's width; JSON
//! columns compare as `jsonb`; timestamps come out in RFC 3339 UTC; cursors encode
//! values as SQLite's do. Where PostgreSQL cannot follow:
//!
//! - `text` cannot hold NUL and `jsonb` cannot hold `\u0000`: refused as invalid values.
//! - `date` columns take timestamps at midnight UTC only (no silent truncation).
//! - `jsonb` sorts by its own order (and answers objects with its key order); `json`
//!   columns keep their text.
//! - A table without a primary key has no stable row identity (`ctid` moves on update),
//!   so it is listed but not paged: a listing that does not fit one page is refused.
//! - Every row of an insert is checked before any is written, so of a body with two
//!   different faults the checked one is reported first.

use std::error::Error as StdError;
use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use rusqlite::types::Value as Sql;
use serde_json::{Map, Value};
use tokio_postgres::error::SqlState;
// The buffer type `ToSql` names, by the path `to_sql_checked!` itself expands to.
use bytes::BytesMut;
use tokio_postgres::types::{
    to_sql_checked, Date, Format, FromSql, IsNull, Kind, Timestamp, ToSql, Type,
};
use tokio_postgres::{GenericClient, Row, Statement};

use super::exec::{Object, Page, MAX_INSERT_ROWS};
use super::query::{encode_cursor, Filter, ListQuery, Op, MAX_LIMIT};
use super::schema::{printable, quote, Column, ColumnType, Schema, Table, UniqueKey};
use super::value::{json_to_sql, text_to_sql};
use crate::error::{Error, Result};

/// PostgreSQL's limit on the parameters of one statement.
const MAX_PARAMS: usize = 65_535;

// ---------------------------------------------------------------------------------------
// Introspection
// ---------------------------------------------------------------------------------------

/// Every column of every ordinary or partitioned table of the schema, by table and
/// position. Domains count as their base type.
const COLUMNS_SQL: &str = "\
SELECT c.relname::text, a.attname::text, COALESCE(base.typname, t.typname)::text,
       a.attnotnull OR t.typnotnull,
       a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_type base ON t.typtype = 'd' AND base.oid = t.typbasetype
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum";

/// Every unique index on plain columns (primary keys, unique constraints, unique
/// indexes), with its key columns in order. A constraint's index bears its name.
const UNIQUE_SQL: &str = "\
SELECT c.relname::text, i.relname::text, x.indisprimary,
       ARRAY(SELECT a.attname::text
             FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
             WHERE k.ord <= x.indnkeyatts
             ORDER BY k.ord)
FROM pg_catalog.pg_index x
JOIN pg_catalog.pg_class c ON c.oid = x.indrelid
JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND x.indisunique AND x.indexprs IS NULL
ORDER BY c.relname, i.relname";

/// How the data API treats a PostgreSQL type (by `pg_type.typname`); anything it does
/// not know is read and written as text.
pub fn column_type(typname: &str) -> ColumnType {
    match typname {
        "int2" | "int4" | "int8" => ColumnType::Integer,
        "float4" | "float8" | "numeric" => ColumnType::Real,
        "bool" => ColumnType::Boolean,
        "timestamptz" | "timestamp" | "date" => ColumnType::Timestamp,
        "json" | "jsonb" => ColumnType::Json,
        "uuid" => ColumnType::Uuid,
        "bytea" => ColumnType::Bytes,
        _ => ColumnType::Text,
    }
}

/// Reads the tables of the PostgreSQL schema `schema_name`: not internal (`_…`), with
/// the `hidden` engine columns (shared mode's `tenant_id`) left out of the columns, the
/// primary key and the unique keys.
pub async fn introspect<C: GenericClient>(
    client: &C,
    schema_name: &str,
    version: i64,
    hidden: &[&str],
) -> Result<Schema> {
    let db = |e: tokio_postgres::Error| Error::TenantDb(e.to_string());
    let columns = client
        .query(COLUMNS_SQL, &[&schema_name])
        .await
        .map_err(db)?;
    let indexes = client
        .query(UNIQUE_SQL, &[&schema_name])
        .await
        .map_err(db)?;
    let exposed = |table: &str| !table.starts_with('_');

    let mut tables = std::collections::BTreeMap::<String, Table>::new();
    for row in &columns {
        let (table, name, typname): (String, String, String) = (
            row.try_get(0).map_err(db)?,
            row.try_get(1).map_err(db)?,
            row.try_get(2).map_err(db)?,
        );
        if !exposed(&table) || hidden.contains(&name.as_str()) {
            continue;
        }
        let not_null: bool = row.try_get(3).map_err(db)?;
        let has_default: bool = row.try_get(4).map_err(db)?;
        let entry = tables.entry(table.clone()).or_insert_with(|| Table {
            name: table,
            columns: Vec::new(),
            primary_key: Vec::new(),
            unique: Vec::new(),
            select_by_key: None,
        });
        entry.columns.push(Column {
            kind: column_type(&typname),
            nullable: !not_null,
            has_default,
            primary_key: false,
            name,
        });
    }
    for row in &indexes {
        let table: String = row.try_get(0).map_err(db)?;
        let Some(t) = tables.get_mut(&table) else {
            continue;
        };
        let name: String = row.try_get(1).map_err(db)?;
        let primary: bool = row.try_get(2).map_err(db)?;
        let columns: Vec<String> = row.try_get::<_, Vec<String>>(3).map_err(db)?;
        let columns: Vec<String> = columns
            .into_iter()
            .filter(|c| !hidden.contains(&c.as_str()))
            .collect();
        if columns.is_empty() {
            continue;
        }
        if primary {
            t.primary_key = columns.clone();
        }
        t.unique.push(UniqueKey { name, columns });
    }
    for t in tables.values_mut() {
        for c in &mut t.columns {
            c.primary_key = t.primary_key.contains(&c.name);
            c.nullable &= !c.primary_key;
        }
        t.select_by_key = t.key().map(|key| {
            format!(
                "SELECT {} FROM {} WHERE {} = {}",
                read_list(&t.columns.iter().collect::<Vec<_>>()),
                quote(&t.name),
                eq_expr(key),
                placeholder(1, Some(key), Role::Key)
            )
        });
    }
    Ok(Schema { version, tables })
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Maps PostgreSQL's errors as [`super::exec::db_error`] maps SQLite's: constraint
/// failures name their constraint, a null in a NOT NULL column names the column, values
/// the column refuses are the client's fault, a full disk is [`Error::StorageFull`]; the
/// rest is internal.
pub fn db_error(table: &Table, e: tokio_postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        return Error::TenantDb(e.to_string());
    };
    let code = db.code();
    if *code == SqlState::DISK_FULL {
        return Error::StorageFull {
            context: format!("writing to table {}", table.name),
        };
    }
    if *code == SqlState::NOT_NULL_VIOLATION {
        return Error::InvalidValue {
            column: db.column().unwrap_or("?").to_owned(),
            reason: "it cannot be null".into(),
        };
    }
    let kind = match code {
        c if *c == SqlState::UNIQUE_VIOLATION => Some(("unique", "key")),
        c if *c == SqlState::FOREIGN_KEY_VIOLATION => Some(("foreign key", "fkey")),
        c if *c == SqlState::CHECK_VIOLATION => Some(("check", "check")),
        c if *c == SqlState::EXCLUSION_VIOLATION
            || *c == SqlState::RESTRICT_VIOLATION
            || *c == SqlState::INTEGRITY_CONSTRAINT_VIOLATION =>
        {
            Some(("constraint", "constraint"))
        }
        _ => None,
    };
    if let Some((kind, suffix)) = kind {
        return Error::ConstraintViolation {
            constraint: db
                .constraint()
                .map_or_else(|| format!("{}_{suffix}", table.name), str::to_owned),
            detail: format!("{kind} constraint on {} refused the change", table.name),
        };
    }
    // Data exceptions: a value PostgreSQL's column refuses where Rust could not tell
    // (a `varchar(n)` length, a `numeric(p, s)` precision, an enum label).
    let refused = match code.code() {
        "22001" => Some("a text value is longer than its column allows"),
        "22003" => Some("a number is out of range for its column"),
        "22021" | "22P05" => Some("a value holds a character PostgreSQL cannot store"),
        "428C9" => Some("a generated column cannot be written"),
        c if c.starts_with("22") => Some("a value does not fit its column"),
        _ => None,
    };
    match refused {
        Some(what) => Error::InvalidInput(format!("{what} (table {})", table.name)),
        None => Error::TenantDb(e.to_string()),
    }
}

fn invalid_cursor() -> Error {
    Error::InvalidFilter(
        "cursor: not a cursor of this listing (pass `next` back with the same filters and order)"
            .into(),
    )
}

// ---------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------

/// Why a value is bound, which decides how one that does not fit is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
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

/// `$n`, cast where the comparison must not depend on the column's width.
fn placeholder(n: usize, column: Option<&Column>, role: Role) -> String {
    match (column.map(|c| c.kind), role) {
        // 64-bit, as on SQLite: `n=lt.9999999999` on an `int4` is a comparison, not an
        // overflow (PostgreSQL compares int4 with int8 and keeps using indexes).
        (Some(ColumnType::Integer), Role::Filter | Role::Cursor | Role::Key) => {
            format!("${n}::int8")
        }
        _ => format!("${n}"),
    }
}

#[derive(Debug, Clone)]
struct Bind<'t> {
    column: Option<&'t Column>,
    value: Sql,
    role: Role,
}

/// The values of one statement, in placeholder order.
#[derive(Debug, Clone, Default)]
struct Binds<'t>(Vec<Bind<'t>>);

impl<'t> Binds<'t> {
    /// Adds a value; answers its placeholder.
    fn push(&mut self, column: Option<&'t Column>, value: Sql, role: Role) -> String {
        self.0.push(Bind {
            column,
            value,
            role,
        });
        placeholder(self.0.len(), column, role)
    }

    /// Every value converted to the type PostgreSQL gave its parameter.
    fn params(&self, stmt: &Statement) -> Result<Vec<Param>> {
        if stmt.params().len() != self.0.len() {
            return Err(Error::Internal(format!(
                "a data statement has {} parameters, {} values were given",
                stmt.params().len(),
                self.0.len()
            )));
        }
        self.0
            .iter()
            .zip(stmt.params())
            .map(|(b, ty)| b.param(ty))
            .collect()
    }
}

impl Bind<'_> {
    fn param(&self, ty: &Type) -> Result<Param> {
        let kind = self.column.map(|c| c.kind);
        convert(&self.value, ty, kind, self.role == Role::Value).map_err(|reason| {
            let column = self.column.map_or("?", |c| c.name.as_str());
            match self.role {
                Role::Value => Error::InvalidValue {
                    column: column.to_owned(),
                    reason,
                },
                Role::Filter => Error::InvalidFilter(format!("{column}: {reason}")),
                Role::Cursor => invalid_cursor(),
                Role::Key => Error::RowNotFound,
                Role::Limit => Error::Internal(format!("a limit cannot be bound: {reason}")),
            }
        })
    }
}

/// A value converted to its parameter's type.
#[derive(Debug)]
enum Param {
    Null,
    Bool(bool),
    Int2(i16),
    Int4(i32),
    Int8(i64),
    Float4(f32),
    Float8(f64),
    Text(String),
    Json(Value),
    Uuid(uuid::Uuid),
    Bytes(Vec<u8>),
    Timestamptz(DateTime<Utc>),
    Timestamp(NaiveDateTime),
    Date(NaiveDate),
    /// The type's text input form, sent in text format for PostgreSQL to parse
    /// (`numeric`, enums, `interval`, `infinity`, …).
    Literal(String),
}

impl ToSql for Param {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Bool(v) => v.to_sql(ty, out),
            Param::Int2(v) => v.to_sql(ty, out),
            Param::Int4(v) => v.to_sql(ty, out),
            Param::Int8(v) => v.to_sql(ty, out),
            Param::Float4(v) => v.to_sql(ty, out),
            Param::Float8(v) => v.to_sql(ty, out),
            // The binary form of the text types is their UTF-8, as is every text form.
            Param::Text(v) | Param::Literal(v) => {
                out.extend_from_slice(v.as_bytes());
                Ok(IsNull::No)
            }
            Param::Json(v) => v.to_sql(ty, out),
            Param::Uuid(v) => v.to_sql(ty, out),
            Param::Bytes(v) => v.to_sql(ty, out),
            Param::Timestamptz(v) => v.to_sql(ty, out),
            Param::Timestamp(v) => v.to_sql(ty, out),
            Param::Date(v) => v.to_sql(ty, out),
        }
    }

    /// [`convert`] matched the value to the type already.
    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        match self {
            Param::Literal(_) => Format::Text,
            _ => Format::Binary,
        }
    }

    to_sql_checked!();
}

/// Types whose values are `String`s both ways.
fn textual(ty: &Type) -> bool {
    matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME) || ty.name() == "citext"
}

fn without_nul(s: &str) -> std::result::Result<String, String> {
    if s.contains('\0') {
        Err("PostgreSQL text cannot hold the NUL character".into())
    } else {
        Ok(s.to_owned())
    }
}

fn json_has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(json_has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

/// A `numeric`'s text form as PostgreSQL reads it: what [`Decimal`] writes.
fn decimal_text(s: &str) -> bool {
    matches!(s, "NaN" | "Infinity" | "-Infinity")
        || (s.parse::<f64>().is_ok()
            && s.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
}

/// Converts a value (as [`super::value`] typed it for its column `kind`) to the
/// parameter type `ty`. `write`: the value is stored, so it must fit exactly; otherwise it
/// is compared, and a `real` beyond range compares as an infinity.
fn convert(
    value: &Sql,
    ty: &Type,
    kind: Option<ColumnType>,
    write: bool,
) -> std::result::Result<Param, String> {
    // A domain's values are its base type's, checked by PostgreSQL against the domain.
    if let Kind::Domain(base) = ty.kind() {
        return convert(value, base, kind, write);
    }
    let int_range = |min: i64, max: i64| format!("expected an integer from {min} to {max}");
    Ok(match (ty, value) {
        (_, Sql::Null) => Param::Null,
        (&Type::INT2, Sql::Integer(i)) => {
            Param::Int2(i16::try_from(*i).map_err(|_| int_range(i16::MIN.into(), i16::MAX.into()))?)
        }
        (&Type::INT4, Sql::Integer(i)) => {
            Param::Int4(i32::try_from(*i).map_err(|_| int_range(i32::MIN.into(), i32::MAX.into()))?)
        }
        (&Type::INT8, Sql::Integer(i)) => Param::Int8(*i),
        (&Type::FLOAT4, Sql::Real(f)) => {
            let narrow = *f as f32;
            if write && !narrow.is_finite() {
                return Err(format!(
                    "expected a number from {:e} to {:e}",
                    f32::MIN,
                    f32::MAX
                ));
            }
            Param::Float4(narrow)
        }
        (&Type::FLOAT8, Sql::Real(f)) => Param::Float8(*f),
        // `{:?}` is the shortest text that reads back as the same f64.
        (&Type::NUMERIC, Sql::Real(f)) => Param::Literal(format!("{f:?}")),
        (&Type::NUMERIC, Sql::Text(s)) if !write && decimal_text(s) => Param::Literal(s.clone()),
        (&Type::BOOL, Sql::Integer(i)) => Param::Bool(*i != 0),
        (&Type::TIMESTAMPTZ | &Type::TIMESTAMP | &Type::DATE, Sql::Text(s)) => timestamp(ty, s)?,
        (&Type::JSON | &Type::JSONB, Sql::Blob(b)) => {
            let v: Value = serde_json::from_slice(b).map_err(|_| "expected JSON".to_owned())?;
            if *ty == Type::JSONB && json_has_nul(&v) {
                return Err("PostgreSQL's jsonb cannot hold the character \\u0000".into());
            }
            Param::Json(v)
        }
        (&Type::UUID, Sql::Text(s)) => {
            Param::Uuid(uuid::Uuid::parse_str(s).map_err(|_| "expected a UUID".to_owned())?)
        }
        (&Type::BYTEA, Sql::Blob(b)) => Param::Bytes(b.clone()),
        (ty, Sql::Text(s)) if textual(ty) => Param::Text(without_nul(s)?),
        // A type read as text (an enum, an interval, …): PostgreSQL parses it.
        (_, Sql::Text(s)) if kind == Some(ColumnType::Text) => Param::Literal(without_nul(s)?),
        _ => return Err(format!("cannot be held by a column of type {}", ty.name())),
    })
}

/// A timestamp as [`super::value`] stores it (`YYYY-MM-DD HH:MM:SS[.ffffff]`, UTC).
fn parse_stored(s: &str) -> Option<NaiveDateTime> {
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
}

/// The inverse of [`parse_stored`], so that cursors read the same on both dialects.
fn stored(t: NaiveDateTime) -> String {
    let s = t.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn timestamp(ty: &Type, s: &str) -> std::result::Result<Param, String> {
    if s == "infinity" || s == "-infinity" {
        return Ok(Param::Literal(s.to_owned()));
    }
    let t = parse_stored(s).ok_or_else(|| "expected an RFC 3339 timestamp".to_owned())?;
    Ok(match *ty {
        Type::TIMESTAMPTZ => Param::Timestamptz(t.and_utc()),
        Type::TIMESTAMP => Param::Timestamp(t),
        _ if t.time() == NaiveTime::MIN => Param::Date(t.date()),
        _ => {
            return Err(
                "expected a date: a timestamp at midnight UTC (2026-01-31T00:00:00Z)".into(),
            )
        }
    })
}

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

/// A `numeric` in its decimal text form (`NaN`, `Infinity`, `-Infinity` included), from
/// the binary form: digit groups of base 10,000 around a weight, with a display scale.
struct Decimal(String);

impl<'a> FromSql<'a> for Decimal {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn StdError + Sync + Send>> {
        let word = |i: usize| -> std::result::Result<u16, Box<dyn StdError + Sync + Send>> {
            raw.get(i..i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| "a truncated numeric".into())
        };
        let digits = usize::from(word(0)?);
        let weight = i32::from(word(2)? as i16);
        let sign = word(4)?;
        let scale = usize::from(word(6)?);
        match sign {
            0xC000 => return Ok(Decimal("NaN".into())),
            0xD000 => return Ok(Decimal("Infinity".into())),
            0xF000 => return Ok(Decimal("-Infinity".into())),
            0x0000 | 0x4000 => {}
            _ => return Err("a numeric with an unknown sign".into()),
        }
        // The group at position `p` (10,000^p).
        let group = |p: i32| -> std::result::Result<u16, Box<dyn StdError + Sync + Send>> {
            match usize::try_from(weight - p) {
                Ok(i) if i < digits => word(8 + 2 * i),
                _ => Ok(0),
            }
        };
        let mut s = String::new();
        if sign == 0x4000 {
            s.push('-');
        }
        if weight < 0 {
            s.push('0');
        } else {
            write!(s, "{}", group(weight)?)?;
            for p in (0..weight).rev() {
                write!(s, "{:04}", group(p)?)?;
            }
        }
        if scale > 0 {
            let mut fraction = String::new();
            for p in 1..=scale.div_ceil(4) {
                write!(fraction, "{:04}", group(-(p as i32))?)?;
            }
            fraction.truncate(scale);
            s.push('.');
            s.push_str(&fraction);
        }
        Ok(Decimal(s))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// One result value, decoded by its type.
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    /// A `real`, shown by its own shortest form (`0.1`, not `0.10000000149011612`).
    Float4(f32),
    Decimal(String),
    Bool(bool),
    Text(String),
    /// UTC.
    Time(NaiveDateTime),
    /// `infinity` or `-infinity`.
    Endless(&'static str),
    Json(Value),
    Uuid(uuid::Uuid),
    Bytes(Vec<u8>),
}

fn time_cell<T>(t: Timestamp<T>, utc: impl FnOnce(T) -> NaiveDateTime) -> Cell {
    match t {
        Timestamp::Value(v) => Cell::Time(utc(v)),
        Timestamp::PosInfinity => Cell::Endless("infinity"),
        Timestamp::NegInfinity => Cell::Endless("-infinity"),
    }
}

impl Cell {
    fn read(row: &Row, i: usize) -> Result<Cell> {
        fn get<'r, T: FromSql<'r>>(row: &'r Row, i: usize) -> Result<Option<T>> {
            row.try_get::<_, Option<T>>(i)
                .map_err(|e| Error::TenantDb(e.to_string()))
        }
        let ty = row
            .columns()
            .get(i)
            .ok_or_else(|| Error::Internal(format!("a data statement answered no column {i}")))?
            .type_();
        let cell = match *ty {
            Type::INT2 => get::<i16>(row, i)?.map(|v| Cell::Int(v.into())),
            Type::INT4 => get::<i32>(row, i)?.map(|v| Cell::Int(v.into())),
            Type::INT8 => get::<i64>(row, i)?.map(Cell::Int),
            Type::FLOAT4 => get::<f32>(row, i)?.map(Cell::Float4),
            Type::FLOAT8 => get::<f64>(row, i)?.map(Cell::Float),
            Type::NUMERIC => get::<Decimal>(row, i)?.map(|d| Cell::Decimal(d.0)),
            Type::BOOL => get::<bool>(row, i)?.map(Cell::Bool),
            Type::TIMESTAMPTZ => {
                get::<Timestamp<DateTime<Utc>>>(row, i)?.map(|t| time_cell(t, |v| v.naive_utc()))
            }
            Type::TIMESTAMP => {
                get::<Timestamp<NaiveDateTime>>(row, i)?.map(|t| time_cell(t, |v| v))
            }
            Type::DATE => get::<Date<NaiveDate>>(row, i)?.map(|d| match d {
                Date::Value(v) => Cell::Time(v.and_time(NaiveTime::MIN)),
                Date::PosInfinity => Cell::Endless("infinity"),
                Date::NegInfinity => Cell::Endless("-infinity"),
            }),
            Type::JSON | Type::JSONB => get::<Value>(row, i)?.map(Cell::Json),
            Type::UUID => get::<uuid::Uuid>(row, i)?.map(Cell::Uuid),
            Type::BYTEA => get::<Vec<u8>>(row, i)?.map(Cell::Bytes),
            _ if textual(ty) => get::<String>(row, i)?.map(Cell::Text),
            _ => {
                return Err(Error::TenantDb(format!(
                    "the data API cannot read a value of type {}",
                    ty.name()
                )))
            }
        };
        Ok(cell.unwrap_or(Cell::Null))
    }

    /// As JSON, exactly as [`super::value::sql_to_json`] shows the same value on SQLite.
    fn into_json(self) -> Value {
        let number = |f: f64| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number);
        match self {
            Cell::Null => Value::Null,
            Cell::Int(i) => Value::from(i),
            Cell::Float(f) => number(f),
            Cell::Float4(f) => number(f.to_string().parse().unwrap_or(f64::NAN)),
            Cell::Decimal(s) => number(s.parse().unwrap_or(f64::NAN)),
            Cell::Bool(b) => Value::Bool(b),
            Cell::Text(s) => Value::String(s),
            Cell::Time(t) => {
                Value::String(t.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
            Cell::Endless(s) => Value::String(s.to_owned()),
            Cell::Json(v) => v,
            Cell::Uuid(u) => Value::String(u.hyphenated().to_string()),
            Cell::Bytes(b) => Value::String(STANDARD.encode(b)),
        }
    }

    /// As a cursor holds it: what [`super::value::sql_to_cursor`] writes for the value
    /// SQLite would have stored, so that it binds back exactly.
    fn into_cursor(self) -> Value {
        use serde_json::json;
        match self {
            Cell::Null => Value::Null,
            Cell::Int(i) => json!({ "i": i }),
            Cell::Bool(b) => json!({ "i": i64::from(b) }),
            Cell::Float(f) => json!({ "r": f.to_bits() }),
            // Widening is exact, and narrows back to the same `real`.
            Cell::Float4(f) => json!({ "r": f64::from(f).to_bits() }),
            Cell::Decimal(s) | Cell::Text(s) => json!({ "t": s }),
            Cell::Time(t) => json!({ "t": stored(t) }),
            Cell::Endless(s) => json!({ "t": s }),
            Cell::Uuid(u) => json!({ "t": u.hyphenated().to_string() }),
            Cell::Json(v) => json!({ "b": STANDARD.encode(v.to_string()) }),
            Cell::Bytes(b) => json!({ "b": STANDARD.encode(b) }),
        }
    }
}

/// The row as an object of `columns` (read in that order).
fn row_object(row: &Row, columns: &[&Column]) -> Result<Object> {
    let mut object = Map::with_capacity(columns.len());
    for (i, col) in columns.iter().enumerate() {
        object.insert(col.name.clone(), Cell::read(row, i)?.into_json());
    }
    Ok(object)
}

// ---------------------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------------------

/// A column as it is read: as text where the data API treats it as text, so that every
/// such type decodes (for `text` and `varchar` the cast is free).
fn read_expr(col: &Column) -> String {
    match col.kind {
        ColumnType::Text => format!("{}::text", quote(&col.name)),
        _ => quote(&col.name),
    }
}

fn read_list(columns: &[&Column]) -> String {
    columns
        .iter()
        .map(|c| read_expr(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A column as it is compared for equality (`json` has no `=`).
fn eq_expr(col: &Column) -> String {
    match col.kind {
        ColumnType::Text => format!("{}::text", quote(&col.name)),
        ColumnType::Json => format!("{}::jsonb", quote(&col.name)),
        _ => quote(&col.name),
    }
}

/// A column as it is ordered: text byte-wise, as SQLite's `BINARY` collation does,
/// whatever the column's or the database's collation.
fn order_expr(col: &Column) -> String {
    match col.kind {
        ColumnType::Text => format!("{}::text COLLATE \"C\"", quote(&col.name)),
        _ => eq_expr(col),
    }
}

/// SQLite's `LIKE` folds ASCII letters only.
fn ascii_lower(expr: &str) -> String {
    format!("translate({expr}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')")
}

fn column<'t>(table: &'t Table, name: &str) -> Result<&'t Column> {
    table.column(name).ok_or_else(|| Error::ColumnNotFound {
        column: printable(name),
    })
}

/// The filters as a condition (`TRUE` without any), their values bound.
fn where_clause<'t>(table: &'t Table, filters: &[Filter], binds: &mut Binds<'t>) -> Result<String> {
    if filters.is_empty() {
        return Ok("TRUE".to_owned());
    }
    let mut parts = Vec::with_capacity(filters.len());
    for f in filters {
        let col = column(table, f.column())?;
        let values = f.values();
        let mut operand = |i: usize| -> Result<String> {
            let value = values
                .get(i)
                .ok_or_else(|| Error::Internal(format!("filter on {} lacks a value", col.name)))?;
            Ok(binds.push(Some(col), value.clone(), Role::Filter))
        };
        let cond = match f.op() {
            Op::Eq => format!("{} = {}", eq_expr(col), operand(0)?),
            Op::Neq => format!("{} <> {}", eq_expr(col), operand(0)?),
            Op::Lt => format!("{} < {}", order_expr(col), operand(0)?),
            Op::Lte => format!("{} <= {}", order_expr(col), operand(0)?),
            Op::Gt => format!("{} > {}", order_expr(col), operand(0)?),
            Op::Gte => format!("{} >= {}", order_expr(col), operand(0)?),
            Op::Like => format!(
                "{} LIKE {} ESCAPE ''",
                ascii_lower(&eq_expr(col)),
                ascii_lower(&operand(0)?)
            ),
            Op::In => {
                let list = (0..values.len())
                    .map(&mut operand)
                    .collect::<Result<Vec<_>>>()?;
                format!("{} IN ({})", eq_expr(col), list.join(", "))
            }
            Op::IsNull => format!("{} IS NULL", quote(&col.name)),
            Op::IsTrue => format!("{} IS TRUE", quote(&col.name)),
            Op::IsFalse => format!("{} IS FALSE", quote(&col.name)),
        };
        parts.push(if f.negated() {
            format!("NOT ({cond})")
        } else {
            format!("({cond})")
        });
    }
    Ok(parts.join(" AND "))
}

/// `ORDER BY` keys with SQLite's null placement made explicit (first ascending, last
/// descending). A table without a primary key breaks ties by `ctid`, stable for one
/// statement only.
fn order_by(table: &Table, order: &[(String, bool)]) -> String {
    order
        .iter()
        .map(|(name, desc)| {
            let expr = table
                .column(name)
                .map_or_else(|| "ctid".to_owned(), order_expr);
            if *desc {
                format!("{expr} DESC NULLS LAST")
            } else {
                format!("{expr} ASC NULLS FIRST")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows strictly after `after` in `order`, as [`super::query::keyset_clause`] says it.
fn keyset<'t>(keys: &[(&'t Column, bool)], after: &[Sql], binds: &mut Binds<'t>) -> Result<String> {
    if keys.len() != after.len() {
        return Err(invalid_cursor());
    }
    let mut alternatives = Vec::with_capacity(keys.len());
    for (i, &(col, desc)) in keys.iter().enumerate() {
        let mut terms = Vec::with_capacity(i + 1);
        for (&(prev, _), value) in keys[..i].iter().zip(after) {
            terms.push(match value {
                Sql::Null => format!("{} IS NULL", quote(&prev.name)),
                v => format!(
                    "{} = {}",
                    order_expr(prev),
                    binds.push(Some(prev), v.clone(), Role::Cursor)
                ),
            });
        }
        let c = order_expr(col);
        terms.push(match (desc, &after[i]) {
            (false, Sql::Null) => format!("{} IS NOT NULL", quote(&col.name)),
            (false, v) => format!("{c} > {}", binds.push(Some(col), v.clone(), Role::Cursor)),
            (true, Sql::Null) => "FALSE".to_owned(),
            (true, v) => format!(
                "({c} < {} OR {} IS NULL)",
                binds.push(Some(col), v.clone(), Role::Cursor),
                quote(&col.name)
            ),
        });
        alternatives.push(format!("({})", terms.join(" AND ")));
    }
    Ok(format!("({})", alternatives.join(" OR ")))
}

async fn query<C: GenericClient>(
    client: &C,
    table: &Table,
    sql: &str,
    binds: &Binds<'_>,
) -> Result<Vec<Row>> {
    let stmt = client.prepare(sql).await.map_err(|e| db_error(table, e))?;
    let params = binds.params(&stmt)?;
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    client
        .query(&stmt, &refs)
        .await
        .map_err(|e| db_error(table, e))
}

async fn execute<C: GenericClient>(
    client: &C,
    table: &Table,
    sql: &str,
    binds: &Binds<'_>,
) -> Result<u64> {
    let stmt = client.prepare(sql).await.map_err(|e| db_error(table, e))?;
    let params = binds.params(&stmt)?;
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    client
        .execute(&stmt, &refs)
        .await
        .map_err(|e| db_error(table, e))
}

// ---------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------

/// A page of rows, in the listing's order, with the cursor of the next one.
pub async fn list<C: GenericClient>(client: &C, table: &Table, q: &ListQuery) -> Result<Page> {
    // SQLite's `rowid` tiebreaker, on a table without a primary key: PostgreSQL has no
    // stable equivalent.
    let keyed = q.order.iter().all(|(c, _)| table.column(c).is_some());
    let mut binds = Binds::default();
    let filter_sql = where_clause(table, &q.filters, &mut binds)?;
    let count_binds = binds.clone();
    let keys: Vec<(&Column, bool)> = q
        .order
        .iter()
        .filter_map(|(c, desc)| table.column(c).map(|col| (col, *desc)))
        .collect();
    let mut conditions = filter_sql.clone();
    if let Some(after) = &q.after {
        if !keyed {
            return Err(invalid_cursor());
        }
        conditions = format!("{conditions} AND {}", keyset(&keys, after, &mut binds)?);
    }
    // Output columns, then the order keys the cursor needs.
    let select: Vec<&Column> = q
        .select
        .iter()
        .map(|c| column(table, c))
        .collect::<Result<_>>()?;
    let mut exprs: Vec<String> = select.iter().map(|c| read_expr(c)).collect();
    if keyed {
        exprs.extend(keys.iter().map(|(c, _)| eq_expr(c)));
    }
    let limit = binds.push(None, Sql::Integer(q.limit as i64 + 1), Role::Limit);
    let sql = format!(
        "SELECT {} FROM {} WHERE {conditions} ORDER BY {} LIMIT {limit}",
        exprs.join(", "),
        quote(&table.name),
        order_by(table, &q.order),
    );
    let count_sql = format!(
        "SELECT count(*) FROM {} WHERE {filter_sql}",
        quote(&table.name)
    );
    let (rows, count) = if q.count {
        let (rows, counted) = futures_util::future::try_join(
            query(client, table, &sql, &binds),
            query(client, table, &count_sql, &count_binds),
        )
        .await?;
        let count: i64 = counted
            .first()
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| Error::TenantDb(e.to_string()))?
            .unwrap_or(0);
        (rows, Some(count))
    } else {
        (query(client, table, &sql, &binds).await?, None)
    };

    let more = rows.len() > q.limit;
    if more && !keyed {
        return Err(Error::InvalidInput(format!(
            "table {} has no primary key, so it cannot be paged on PostgreSQL: narrow the \
             filters or raise the limit (up to {MAX_LIMIT}) to list every row in one page, \
             or give the table a primary key",
            table.name
        )));
    }
    let mut data = Vec::with_capacity(rows.len().min(q.limit));
    for row in rows.iter().take(q.limit) {
        data.push(row_object(row, &select)?);
    }
    let next = match q.limit.checked_sub(1).and_then(|i| rows.get(i)) {
        Some(last) if more => {
            let values = (select.len()..select.len() + keys.len())
                .map(|i| Cell::read(last, i).map(Cell::into_cursor))
                .collect::<Result<Vec<_>>>()?;
            Some(encode_cursor(&q.fingerprint, values))
        }
        _ => None,
    };
    Ok(Page { data, next, count })
}

/// The key column and bound key value of a `/{table}/{id}` path. A malformed id names
/// no row.
fn key_of<'t>(table: &'t Table, raw: &str) -> Result<(&'t Column, Sql)> {
    let col = table.key().ok_or_else(|| {
        Error::InvalidInput(format!(
            "table {} has no single-column primary key to address rows by",
            table.name
        ))
    })?;
    let value = text_to_sql(col, raw).map_err(|_| Error::RowNotFound)?;
    Ok((col, value))
}

fn all_columns(table: &Table) -> Vec<&Column> {
    table.columns.iter().collect()
}

/// One row by its primary key.
pub async fn get<C: GenericClient>(client: &C, table: &Table, id: &str) -> Result<Object> {
    let (key, value) = key_of(table, id)?;
    let sql = table.select_by_key.as_deref().ok_or(Error::RowNotFound)?;
    let mut binds = Binds::default();
    binds.push(Some(key), value, Role::Key);
    let rows = query(client, table, sql, &binds).await?;
    match rows.first() {
        Some(row) => row_object(row, &all_columns(table)),
        None => Err(Error::RowNotFound),
    }
}

/// Checks an object's keys and converts its values, in the object's order.
fn assignments<'t>(table: &'t Table, object: &Object) -> Result<Vec<(&'t Column, Sql)>> {
    object
        .iter()
        .map(|(name, value)| {
            let col = column(table, name)?;
            Ok((col, json_to_sql(col, value)?))
        })
        .collect()
}

/// Inserts rows, generating UUIDv7 keys for text/UUID keys left out. Every row is checked
/// before any is written; the rows go in one statement (more only past PostgreSQL's
/// parameter limit), answered in the order given.
pub async fn insert<C: GenericClient>(
    client: &C,
    table: &Table,
    rows: &[Object],
) -> Result<Vec<Object>> {
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
                values.push((key, Sql::Text(uuid::Uuid::now_v7().to_string())));
            }
        }
        checked.push(values);
    }
    // Every column some row names, in table order; a row without one takes its default.
    let columns: Vec<&Column> = table
        .columns
        .iter()
        .filter(|c| checked.iter().flatten().any(|(rc, _)| rc.name == c.name))
        .collect();
    let returning = read_list(&all_columns(table));
    let mut created = Vec::with_capacity(rows.len());
    if columns.is_empty() {
        let sql = format!(
            "INSERT INTO {} DEFAULT VALUES RETURNING {returning}",
            quote(&table.name)
        );
        for _ in &checked {
            for row in query(client, table, &sql, &Binds::default()).await? {
                created.push(row_object(&row, &all_columns(table))?);
            }
        }
        return Ok(created);
    }
    let names = columns
        .iter()
        .map(|c| quote(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    for chunk in checked.chunks((MAX_PARAMS / columns.len()).max(1)) {
        let mut binds = Binds::default();
        let mut tuples = Vec::with_capacity(chunk.len());
        for values in chunk {
            let cells: Vec<String> = columns
                .iter()
                .map(|c| match values.iter().find(|(vc, _)| vc.name == c.name) {
                    Some((vc, v)) => binds.push(Some(vc), v.clone(), Role::Value),
                    None => "DEFAULT".to_owned(),
                })
                .collect();
            tuples.push(format!("({})", cells.join(", ")));
        }
        let sql = format!(
            "INSERT INTO {} ({names}) VALUES {} RETURNING {returning}",
            quote(&table.name),
            tuples.join(", ")
        );
        for row in query(client, table, &sql, &binds).await? {
            created.push(row_object(&row, &all_columns(table))?);
        }
    }
    Ok(created)
}

/// A patch's assignments. A primary key column may only be named with the value it has.
fn set_values<'t>(
    table: &'t Table,
    patch: &Object,
    key: Option<(&Column, &Sql)>,
) -> Result<Vec<(&'t Column, Sql)>> {
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

async fn update_where<'t, C: GenericClient>(
    client: &C,
    table: &'t Table,
    values: Vec<(&'t Column, Sql)>,
    condition: &str,
    mut binds: Binds<'t>,
) -> Result<Vec<Object>> {
    let set = values
        .into_iter()
        .map(|(c, v)| {
            format!(
                "{} = {}",
                quote(&c.name),
                binds.push(Some(c), v, Role::Value)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "UPDATE {} SET {set} WHERE {condition} RETURNING {}",
        quote(&table.name),
        read_list(&all_columns(table))
    );
    query(client, table, &sql, &binds)
        .await?
        .iter()
        .map(|row| row_object(row, &all_columns(table)))
        .collect()
}

/// Updates one row by its primary key; answers the whole row.
pub async fn update<C: GenericClient>(
    client: &C,
    table: &Table,
    id: &str,
    patch: &Object,
) -> Result<Object> {
    let (key, key_value) = key_of(table, id)?;
    let values = set_values(table, patch, Some((key, &key_value)))?;
    // The key is `$1`, so an id that cannot be a key answers "no such row" first.
    let mut binds = Binds::default();
    let condition = format!(
        "{} = {}",
        eq_expr(key),
        binds.push(Some(key), key_value, Role::Key)
    );
    let mut rows = update_where(client, table, values, &condition, binds).await?;
    rows.pop().ok_or(Error::RowNotFound)
}

/// Updates every row the filters match (at least one filter); answers them.
pub async fn update_filtered<C: GenericClient>(
    client: &C,
    table: &Table,
    filters: &[Filter],
    patch: &Object,
) -> Result<Vec<Object>> {
    super::query::require_filters(filters, "update")?;
    let values = set_values(table, patch, None)?;
    let mut binds = Binds::default();
    let condition = where_clause(table, filters, &mut binds)?;
    update_where(client, table, values, &condition, binds).await
}

/// Deletes one row by its primary key.
pub async fn delete<C: GenericClient>(client: &C, table: &Table, id: &str) -> Result<()> {
    let (key, value) = key_of(table, id)?;
    let mut binds = Binds::default();
    let sql = format!(
        "DELETE FROM {} WHERE {} = {}",
        quote(&table.name),
        eq_expr(key),
        binds.push(Some(key), value, Role::Key)
    );
    match execute(client, table, &sql, &binds).await? {
        0 => Err(Error::RowNotFound),
        _ => Ok(()),
    }
}

/// Deletes every row the filters match (at least one filter); answers how many.
pub async fn delete_filtered<C: GenericClient>(
    client: &C,
    table: &Table,
    filters: &[Filter],
) -> Result<usize> {
    super::query::require_filters(filters, "delete")?;
    let mut binds = Binds::default();
    let condition = where_clause(table, filters, &mut binds)?;
    let sql = format!("DELETE FROM {} WHERE {condition}", quote(&table.name));
    let n = execute(client, table, &sql, &binds).await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decimal(raw: &[u16]) -> String {
        let bytes: Vec<u8> = raw.iter().flat_map(|w| w.to_be_bytes()).collect();
        match Decimal::from_sql(&Type::NUMERIC, &bytes) {
            Ok(d) => d.0,
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn reads_numeric_binary() {
        // ndigits, weight, sign, dscale, digits…
        assert_eq!(decimal(&[2, 0, 0, 2, 123, 4500]), "123.45");
        assert_eq!(decimal(&[1, 1, 0x4000, 0, 1]), "-10000");
        assert_eq!(decimal(&[1, 0xFFFE, 0, 10, 12]), "0.0000001200");
        assert_eq!(decimal(&[3, 2, 0, 0, 1, 2345, 6789]), "123456789");
        assert_eq!(decimal(&[1, 3, 0, 1, 7]), "7000000000000.0");
        assert_eq!(decimal(&[0, 0, 0, 0]), "0");
        assert_eq!(decimal(&[0, 0, 0, 3]), "0.000");
        assert_eq!(decimal(&[0, 0, 0xC000, 0]), "NaN");
        assert!(decimal(&[2, 0, 0, 2, 123]).starts_with("error"));
    }

    #[test]
    fn converts_by_parameter_type() {
        let ok = |v: Sql, ty: Type| convert(&v, &ty, None, true);
        assert!(matches!(
            ok(Sql::Integer(70_000), Type::INT4),
            Ok(Param::Int4(70_000))
        ));
        assert!(ok(Sql::Integer(70_000), Type::INT2).is_err());
        assert!(ok(Sql::Integer(i64::MAX), Type::INT4).is_err());
        assert!(ok(Sql::Real(1e300), Type::FLOAT4).is_err());
        assert!(matches!(
            convert(&Sql::Real(1e300), &Type::FLOAT4, None, false),
            Ok(Param::Float4(f)) if f.is_infinite()
        ));
        assert!(ok(Sql::Text("a\0b".into()), Type::TEXT).is_err());
        assert!(matches!(
            ok(Sql::Real(0.1), Type::NUMERIC),
            Ok(Param::Literal(s)) if s == "0.1"
        ));
        assert!(ok(Sql::Text("2026-01-31 00:00:00".into()), Type::DATE).is_ok());
        assert!(ok(Sql::Text("2026-01-31 00:00:01".into()), Type::DATE).is_err());
        assert!(ok(Sql::Blob(br#"{"a":"\u0000"}"#.to_vec()), Type::JSONB).is_err());
        assert!(ok(Sql::Blob(br#"{"a":"\u0000"}"#.to_vec()), Type::JSON).is_ok());
        // A cursor's text for a numeric is checked; elsewhere text goes only to text.
        let cursor = |v: &str| convert(&Sql::Text(v.into()), &Type::NUMERIC, None, false);
        assert!(cursor("-12.5e3").is_ok() && cursor("NaN").is_ok());
        assert!(cursor("1; DROP").is_err());
        assert!(ok(Sql::Text("5".into()), Type::INT8).is_err());
    }

    #[test]
    fn stored_timestamps_round_trip() {
        for s in [
            "2026-01-31 18:00:00",
            "2026-01-31 18:00:00.25",
            "1999-12-31 23:59:59.000001",
        ] {
            assert_eq!(stored(parse_stored(s).unwrap()), s);
        }
    }
}
