//! Runs the data API's statements ([`crate::sql::builder`]) on PostgreSQL and introspects
//! a tenant's tables, answering the same JSON and the same errors as SQLite. Table names
//! are never schema-qualified: the tenant context (`search_path`, `tenancy.tenant_id`) is
//! set in the statements' transaction.
//!
//! **Typing.** Every statement is prepared first, and PostgreSQL infers each parameter's
//! type from the column it meets. A value is checked against its column's [`ColumnType`]
//! by [`super::value`] exactly as on SQLite, then converted in Rust to that parameter's
//! type, so a value that does not fit the real column (`int4` overflow, a NUL in `text`,
//! …) is refused, naming its column, before any statement runs. Results are decoded by
//! their type. Types the data API reads as text (enums, `interval`, …) are selected as
//! `::text` and bound in their text input form.
//!
//! **Same answers as SQLite.** Text compares and sorts by the column's own collation, so
//! that an ordinary index serves every ordering and keyset page: byte-wise, as SQLite's
//! `BINARY`, wherever that collation is `C` or `C.UTF-8`; `like` folds ASCII letters only and has
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
use futures_util::future::OptionFuture;
use serde_json::{Map, Value};
use tokio_postgres::error::SqlState;
// The buffer type `ToSql` names, by the path `to_sql_checked!` itself expands to.
use bytes::BytesMut;
use tokio_postgres::types::{
    to_sql_checked, Date, Format, FromSql, IsNull, Kind, Timestamp, ToSql, Type,
};
use tokio_postgres::{Client, GenericClient, Row, Row as PgRow, Statement as PgStatement};

use super::ops::{DataOp, DataOutput, Outcome, Plan};
use super::query::{Filter, ListQuery};
use super::schema::{Column, ColumnType, IndexKey, Schema, Table, UniqueKey};
use super::value::Value as Sql;
use super::{Object, Page};
use crate::error::{Error, Result};
use crate::sql::builder::invalid_cursor;
use crate::sql::{Bind, Postgres, Returns, Role, Statement};
use crate::store::{begin_with_context, Context, PgConn, CONTEXT_SQL};

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

/// Every index on plain columns (primary keys, unique constraints, unique and other
/// indexes), with its key columns in order. A constraint's index bears its name.
const INDEXES_SQL: &str = "\
SELECT c.relname::text, i.relname::text, x.indisprimary, x.indisunique,
       ARRAY(SELECT a.attname::text
             FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
             WHERE k.ord <= x.indnkeyatts
             ORDER BY k.ord)
FROM pg_catalog.pg_index x
JOIN pg_catalog.pg_class c ON c.oid = x.indrelid
JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND x.indexprs IS NULL
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
        .query(INDEXES_SQL, &[&schema_name])
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
            indexes: Vec::new(),
            sql: Default::default(),
            rowid: false,
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
        let unique: bool = row.try_get(3).map_err(db)?;
        let columns: Vec<String> = row.try_get::<_, Vec<String>>(4).map_err(db)?;
        let columns: Vec<String> = columns
            .into_iter()
            .filter(|c| !hidden.contains(&c.as_str()))
            .collect();
        if columns.is_empty() {
            continue;
        }
        t.indexes.push(IndexKey {
            name: name.clone(),
            columns: columns.clone(),
        });
        if !unique {
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
    }
    Ok(Schema { version, tables })
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Maps PostgreSQL's errors as [`super::sqlite::db_error`] maps SQLite's: constraint
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
    // An index entry over the B-tree's size: the engine's own bound catches a row's new
    // values, this an update whose new value joins long values already in the row.
    if *code == SqlState::PROGRAM_LIMIT_EXCEEDED && db.message().contains("index row") {
        let index = table
            .indexes
            .iter()
            .find(|i| db.message().contains(&format!("\"{}\"", i.name)));
        return Error::ValueTooLong {
            column: index.map_or_else(|| "?".to_owned(), |i| i.columns.join(", ")),
            table: table.name.clone(),
            limit: crate::sql::builder::MAX_INDEXED_BYTES,
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

// ---------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------

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
// Running
// ---------------------------------------------------------------------------------------

fn bind_param(b: &Bind<'_>, ty: &Type) -> Result<Param> {
    let kind = b.column.map(|c| c.kind);
    convert(&b.value, ty, kind, b.role == Role::Value).map_err(|reason| {
        let column = b.column.map_or("?", |c| c.name.as_str());
        match b.role {
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

/// Every value converted to the type PostgreSQL gave its parameter. The key of a
/// `/{table}/{id}` path is checked first, so an id that cannot be a key answers "no such
/// row" before anything else.
fn params(binds: &[Bind<'_>], stmt: &PgStatement) -> Result<Vec<Param>> {
    if stmt.params().len() != binds.len() {
        return Err(Error::Internal(format!(
            "a data statement has {} parameters, {} values were given",
            stmt.params().len(),
            binds.len()
        )));
    }
    for (b, ty) in binds.iter().zip(stmt.params()) {
        if b.role == Role::Key {
            bind_param(b, ty)?;
        }
    }
    binds
        .iter()
        .zip(stmt.params())
        .map(|(b, ty)| bind_param(b, ty))
        .collect()
}

/// What the server answered to one statement.
enum Reply {
    Rows(Vec<PgRow>),
    Affected(u64),
}

fn outcome(returns: &Returns<'_>, reply: Reply) -> Result<Outcome> {
    let db = |e: tokio_postgres::Error| Error::TenantDb(e.to_string());
    Ok(match (returns, reply) {
        (_, Reply::Affected(n)) => Outcome::Affected(n),
        (Returns::Count, Reply::Rows(rows)) => Outcome::Count(
            rows.first()
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()
                .map_err(db)?
                .unwrap_or(0),
        ),
        (Returns::Affected, Reply::Rows(rows)) => Outcome::Affected(rows.len() as u64),
        (
            Returns::Rows {
                columns,
                cursor_keys,
            },
            Reply::Rows(rows),
        ) => Outcome::Rows(
            rows.iter()
                .map(|row| {
                    let cursor = (columns.len()..columns.len() + cursor_keys)
                        .map(|i| Cell::read(row, i).map(Cell::into_cursor))
                        .collect::<Result<Vec<_>>>()?;
                    Ok(super::ops::Row {
                        object: row_object(row, columns)?,
                        cursor,
                    })
                })
                .collect::<Result<_>>()?,
        ),
    })
}

async fn send<C: GenericClient>(
    client: &C,
    stmt: &PgStatement,
    params: &[&(dyn ToSql + Sync)],
    returns: &Returns<'_>,
) -> std::result::Result<Reply, tokio_postgres::Error> {
    match returns {
        Returns::Affected => client.execute(stmt, params).await.map(Reply::Affected),
        _ => client.query(stmt, params).await.map(Reply::Rows),
    }
}

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Runs the statements one after another in the caller's transaction (which sets the
/// tenant context and commits).
pub async fn run<C: GenericClient>(
    client: &C,
    table: &Table,
    statements: &[Statement<'_>],
) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::with_capacity(statements.len());
    for s in statements {
        let stmt = client
            .prepare(&s.sql)
            .await
            .map_err(|e| db_error(table, e))?;
        let params = params(&s.binds, &stmt)?;
        let reply = send(client, &stmt, &refs(&params), &s.returns)
            .await
            .map_err(|e| db_error(table, e))?;
        outcomes.push(outcome(&s.returns, reply)?);
    }
    Ok(outcomes)
}

/// Runs one data operation in the caller's transaction.
pub async fn execute<C: GenericClient>(
    client: &C,
    table: &Table,
    op: &DataOp,
) -> Result<DataOutput> {
    let plan = Plan::new(&Postgres, table, op)?;
    let outcomes = run(client, table, &plan.statements).await?;
    plan.finish(outcomes)
}

/// The statements prepared on one connection, by schema version and SQL text.
const STATEMENT_CACHE: usize = 512;

/// Where the context statement is kept among a connection's statements (it belongs to no
/// schema version).
const CONTEXT_VERSION: i64 = -1;

/// What a write's outcomes must pass before its transaction commits.
pub(crate) type OutcomeCheck<'a> = dyn Fn(&[Outcome]) -> Result<()> + Sync + 'a;

/// Runs the statements of one data operation on a pooled connection in **one round
/// trip**: `BEGIN`, the tenant context, every statement and `COMMIT` are sent together
/// and answered together (the transaction is left out for a lone statement that needs no
/// context). Statements are prepared once per connection and schema version — inside the
/// transaction, once the context is set, since a statement's tables are found by the
/// `search_path` it is prepared under — so only a statement this connection has not seen
/// costs a round trip of its own. The connection is pooled again only once the server has
/// answered everything, so a cancelled request closes it, transaction and context with it.
pub(crate) async fn run_pipelined(
    conn: &mut PgConn,
    context: Option<&Context>,
    version: i64,
    table: &Table,
    statements: &[Statement<'_>],
    check: Option<&OutcomeCheck<'_>>,
    store_error: impl Fn(tokio_postgres::Error) -> Error,
) -> Result<Vec<Outcome>> {
    // A statement refused for want of a privilege: the tenant's grants are missing.
    let data_error = |e: tokio_postgres::Error| match e.code() {
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => store_error(e),
        _ => db_error(table, e),
    };
    // The context statement needs no search_path: prepared once per connection, outside.
    let context_stmt = match context {
        Some(_) => Some(match conn.statements().get(CONTEXT_VERSION, CONTEXT_SQL) {
            Some(stmt) => stmt.clone(),
            None => {
                let stmt = conn.prepare(CONTEXT_SQL).await.map_err(&store_error)?;
                conn.statements()
                    .insert(CONTEXT_VERSION, CONTEXT_SQL, stmt.clone());
                stmt
            }
        }),
        None => None,
    };
    let mut missing: Vec<&str> = Vec::new();
    for s in statements {
        if conn.statements().get(version, &s.sql).is_none() && !missing.contains(&&*s.sql) {
            missing.push(&s.sql);
        }
    }
    let transaction = context.is_some() || statements.len() > 1;

    // Not reusable until the server has answered everything.
    conn.discard();
    let mut opened = false;
    if !missing.is_empty() {
        let client: &Client = conn;
        let (begun, set, prepared) = futures_util::future::join3(
            begin(client, transaction),
            set_context(client, context, context_stmt.as_ref()),
            futures_util::future::join_all(missing.iter().map(|sql| client.prepare(sql))),
        )
        .await;
        begun.transpose().map_err(&store_error)?;
        set.transpose().map_err(&store_error)?;
        opened = transaction;
        let cache = conn.statements();
        if cache.len() + missing.len() > STATEMENT_CACHE {
            cache.keep_only(CONTEXT_VERSION);
        }
        for (sql, stmt) in missing.into_iter().zip(prepared) {
            cache.insert(version, sql, stmt.map_err(data_error)?);
        }
    }
    let prepared: Vec<PgStatement> = statements
        .iter()
        .map(|s| {
            conn.statements()
                .get(version, &s.sql)
                .cloned()
                .ok_or_else(|| Error::Internal("a prepared statement went missing".into()))
        })
        .collect::<Result<_>>()?;
    let params = statements
        .iter()
        .zip(&prepared)
        .map(|(s, stmt)| params(&s.binds, stmt))
        .collect::<Result<Vec<_>>>();
    let params = match params {
        Ok(params) => params,
        Err(e) => {
            // Refused before anything ran: end what was opened and keep the connection.
            if !opened || conn.batch_execute("ROLLBACK").await.is_ok() {
                conn.reuse();
            }
            return Err(e);
        }
    };
    let param_refs: Vec<Vec<&(dyn ToSql + Sync)>> = params.iter().map(|p| refs(p)).collect();

    let client: &Client = conn;
    let work = futures_util::future::join_all(
        statements
            .iter()
            .zip(&prepared)
            .zip(&param_refs)
            .map(|((s, stmt), p)| send(client, stmt, p, &s.returns)),
    );
    // A checked write commits only once its outcomes passed: one more round trip.
    let pipelined_commit = transaction && check.is_none();
    let commit = OptionFuture::from(pipelined_commit.then(|| client.batch_execute("COMMIT")));
    // Polled in this order, so the requests go out in this order, before any answer.
    let (begun, set, replies, committed) = futures_util::future::join4(
        begin(client, transaction && !opened),
        set_context(client, context.filter(|_| !opened), context_stmt.as_ref()),
        work,
        commit,
    )
    .await;
    let clean = match &committed {
        Some(result) => result.is_ok(),
        None => !client.is_closed(),
    };
    begun.transpose().map_err(&store_error)?;
    set.transpose().map_err(&store_error)?;
    let mut outcomes = Vec::with_capacity(replies.len());
    for (s, reply) in statements.iter().zip(replies) {
        outcomes.push(outcome(&s.returns, reply.map_err(data_error)?)?);
    }
    committed.transpose().map_err(&store_error)?;
    if let Some(check) = check {
        let passed = check(&outcomes);
        let end = if passed.is_ok() { "COMMIT" } else { "ROLLBACK" };
        conn.batch_execute(end).await.map_err(&store_error)?;
        conn.reuse();
        return passed.map(|()| outcomes);
    }
    if clean {
        conn.reuse();
    }
    Ok(outcomes)
}

/// PostgreSQL's plan for a statement (`EXPLAIN`, with its values bound), one line a
/// row, in a transaction with the tenant context set.
pub(crate) async fn explain(
    conn: &mut PgConn,
    context: Option<&Context>,
    table: &Table,
    statement: &Statement<'_>,
    store_error: impl Fn(tokio_postgres::Error) -> Error,
) -> Result<Vec<String>> {
    begin_with_context(conn, context)
        .await
        .map_err(&store_error)?;
    let stmt = conn
        .prepare(&format!("EXPLAIN {}", statement.sql))
        .await
        .map_err(|e| db_error(table, e))?;
    let params = params(&statement.binds, &stmt)?;
    let rows = conn
        .query(&stmt, &refs(&params))
        .await
        .map_err(|e| db_error(table, e))?;
    conn.batch_execute("COMMIT").await.map_err(&store_error)?;
    conn.reuse();
    rows.iter()
        .map(|r| {
            r.try_get::<_, String>(0)
                .map_err(|e| Error::TenantDb(e.to_string()))
        })
        .collect()
}

/// Runs one statement of the application's own (`$n` placeholders, each value converted
/// to the type PostgreSQL infers for it) in a transaction with the tenant context set; the
/// rows it answers, each value as JSON by its type.
pub(crate) async fn query(
    conn: &mut PgConn,
    context: Option<&Context>,
    sql: &str,
    values: &[Sql],
    store_error: impl Fn(tokio_postgres::Error) -> Error,
) -> Result<Vec<Object>> {
    let statement_error = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(d) if *d.code() == SqlState::INSUFFICIENT_PRIVILEGE => Error::Forbidden {
            needed: "a statement within the tenant's own tables",
        },
        Some(d) if d.code().code().starts_with("23") => Error::ConstraintViolation {
            constraint: d.constraint().unwrap_or("?").to_owned(),
            detail: "a constraint refused the change".into(),
        },
        // The statement's own fault: syntax, names, types, values.
        Some(d) if ["42", "22"].contains(&&d.code().code()[..2]) => {
            Error::InvalidInput(format!("the statement failed: {}", d.message()))
        }
        Some(d) => Error::TenantDb(format!("{} ({})", d.message(), d.code().code())),
        None => store_error(e),
    };
    begin_with_context(conn, context)
        .await
        .map_err(&store_error)?;
    let stmt = conn.prepare(sql).await.map_err(statement_error)?;
    if stmt.params().len() != values.len() {
        return Err(Error::InvalidInput(format!(
            "the statement takes {} parameters, {} were given",
            stmt.params().len(),
            values.len()
        )));
    }
    let params = values
        .iter()
        .zip(stmt.params())
        .enumerate()
        .map(|(i, (v, ty))| {
            convert(v, ty, None, true)
                .map_err(|reason| Error::InvalidInput(format!("parameter ${}: {reason}", i + 1)))
        })
        .collect::<Result<Vec<_>>>()?;
    let rows = conn
        .query(&stmt, &refs(&params))
        .await
        .map_err(statement_error)?;
    conn.batch_execute("COMMIT").await.map_err(&store_error)?;
    conn.reuse();
    rows.iter()
        .map(|row| {
            let mut object = Map::with_capacity(row.len());
            for (i, column) in row.columns().iter().enumerate() {
                object.insert(column.name().to_owned(), Cell::read(row, i)?.into_json());
            }
            Ok(object)
        })
        .collect()
}

fn begin(
    client: &Client,
    transaction: bool,
) -> OptionFuture<
    impl std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>> + '_,
> {
    OptionFuture::from(transaction.then(|| client.batch_execute("BEGIN")))
}

fn set_context<'a>(
    client: &'a Client,
    context: Option<&'a Context>,
    stmt: Option<&'a PgStatement>,
) -> OptionFuture<
    impl std::future::Future<Output = std::result::Result<u64, tokio_postgres::Error>> + 'a,
> {
    OptionFuture::from(context.zip(stmt).map(|(c, stmt)| async move {
        client
            .execute(stmt, &[&c.search_path, &c.tenant_id, &c.role])
            .await
    }))
}

// The operations one at a time, in the caller's transaction.

pub async fn list<C: GenericClient>(client: &C, table: &Table, q: &ListQuery) -> Result<Page> {
    execute(client, table, &DataOp::List(q.clone()))
        .await?
        .into_page()
}

pub async fn get<C: GenericClient>(client: &C, table: &Table, id: &str) -> Result<Object> {
    execute(client, table, &DataOp::Get(id.to_owned()))
        .await?
        .into_row()
}

pub async fn insert<C: GenericClient>(
    client: &C,
    table: &Table,
    rows: &[Object],
) -> Result<Vec<Object>> {
    execute(client, table, &DataOp::Insert(rows.to_vec()))
        .await?
        .into_rows()
}

pub async fn update<C: GenericClient>(
    client: &C,
    table: &Table,
    id: &str,
    patch: &Object,
) -> Result<Object> {
    let op = DataOp::Update(id.to_owned(), patch.clone());
    execute(client, table, &op).await?.into_row()
}

pub async fn update_filtered<C: GenericClient>(
    client: &C,
    table: &Table,
    filters: &[Filter],
    patch: &Object,
) -> Result<Vec<Object>> {
    let op = DataOp::UpdateFiltered(filters.to_vec(), patch.clone());
    execute(client, table, &op).await?.into_rows()
}

pub async fn delete<C: GenericClient>(client: &C, table: &Table, id: &str) -> Result<()> {
    execute(client, table, &DataOp::Delete(id.to_owned()))
        .await
        .map(|_| ())
}

pub async fn delete_filtered<C: GenericClient>(
    client: &C,
    table: &Table,
    filters: &[Filter],
) -> Result<usize> {
    let op = DataOp::DeleteFiltered(filters.to_vec());
    execute(client, table, &op).await?.into_deleted()
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
