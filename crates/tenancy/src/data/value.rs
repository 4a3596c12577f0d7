//! The engine's own SQL value, and JSON → value conversions by column type, with errors
//! that name the column. Executors convert [`Value`] to their driver's types and read
//! results back ([`super::sqlite`], [`super::postgres`]).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::Value as Json;

use super::schema::{Column, ColumnType};
use crate::error::{Error, Result};

/// A value as the data API binds it, in SQLite's storage classes: booleans are integers,
/// timestamps text (`YYYY-MM-DD HH:MM:SS[.ffffff]`, UTC), JSON a blob of its text.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

type Sql = Value;

fn invalid(column: &Column, reason: impl Into<String>) -> Error {
    Error::InvalidValue {
        column: column.name.clone(),
        reason: reason.into(),
    }
}

/// Timestamps are stored as UTC `YYYY-MM-DD HH:MM:SS[.ffffff]`, the shape SQL's
/// `CURRENT_TIMESTAMP` writes, so stored values compare and sort correctly as text.
fn store_timestamp(t: DateTime<Utc>) -> String {
    let s = t.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A stored timestamp of whole seconds, `YYYY-MM-DD HH:MM:SS` as `CURRENT_TIMESTAMP`
/// writes it, in RFC 3339 (`YYYY-MM-DDTHH:MM:SSZ`): what [`parse_timestamp`] and chrono's
/// formatting answer for it, without either. `None` for anything else, valid or not.
pub(crate) fn whole_second_rfc3339(s: &[u8]) -> Option<String> {
    let shaped = s.len() == 19
        && s[4] == b'-'
        && s[7] == b'-'
        && s[10] == b' '
        && s[13] == b':'
        && s[16] == b':';
    if !shaped {
        return None;
    }
    let number = |at: usize, len: usize| {
        s[at..at + len].iter().try_fold(0u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (hour, minute, second) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    // A leap second (`:60`) takes the general path.
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    let text = std::str::from_utf8(s).ok()?;
    Some(format!("{}T{}Z", &text[..10], &text[11..]))
}

pub(crate) fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .map(|n| n.and_utc())
}

/// A JSON value for a column, as written by a client (insert, update).
pub fn json_to_value(column: &Column, value: &Json) -> Result<Sql> {
    if value.is_null() {
        return if column.nullable {
            Ok(Sql::Null)
        } else {
            Err(invalid(column, "it cannot be null"))
        };
    }
    match column.kind {
        ColumnType::Integer => value
            .as_i64()
            .map(Sql::Integer)
            .ok_or_else(|| invalid(column, "expected an integer (64-bit)")),
        ColumnType::Real => match value.as_f64() {
            Some(f) if f.is_finite() => Ok(Sql::Real(f)),
            _ => Err(invalid(column, "expected a finite number")),
        },
        ColumnType::Text => value
            .as_str()
            .map(|s| Sql::Text(s.to_owned()))
            .ok_or_else(|| invalid(column, "expected a string")),
        ColumnType::Boolean => value
            .as_bool()
            .map(|b| Sql::Integer(b as i64))
            .ok_or_else(|| invalid(column, "expected true or false")),
        ColumnType::Timestamp => value
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| Sql::Text(store_timestamp(t.with_timezone(&Utc))))
            .ok_or_else(|| {
                invalid(
                    column,
                    "expected an RFC 3339 timestamp (2026-01-31T18:00:00Z)",
                )
            }),
        // As a blob: stored as text, SQLite's numeric affinity would turn a bare JSON
        // number into a (lossy) float.
        ColumnType::Json => Ok(Sql::Blob(value.to_string().into_bytes())),
        ColumnType::Uuid => value
            .as_str()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .map(|u| Sql::Text(u.hyphenated().to_string()))
            .ok_or_else(|| invalid(column, "expected a UUID")),
        ColumnType::Bytes => value
            .as_str()
            .and_then(|s| STANDARD.decode(s).ok())
            .map(Sql::Blob)
            .ok_or_else(|| invalid(column, "expected base64")),
    }
}

/// A filter operand from a query string, typed by its column.
pub fn text_to_value(column: &Column, raw: &str) -> Result<Sql> {
    let bad = |what: &str| Error::InvalidFilter(format!("{}: {what}", column.name));
    match column.kind {
        ColumnType::Integer => raw
            .parse::<i64>()
            .map(Sql::Integer)
            .map_err(|_| bad("expected an integer")),
        ColumnType::Real => match raw.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Sql::Real(f)),
            _ => Err(bad("expected a finite number")),
        },
        ColumnType::Text => Ok(Sql::Text(raw.to_owned())),
        ColumnType::Boolean => match raw {
            "true" => Ok(Sql::Integer(1)),
            "false" => Ok(Sql::Integer(0)),
            _ => Err(bad("expected true or false")),
        },
        ColumnType::Timestamp => DateTime::parse_from_rfc3339(raw)
            .map(|t| Sql::Text(store_timestamp(t.with_timezone(&Utc))))
            .map_err(|_| bad("expected an RFC 3339 timestamp")),
        ColumnType::Json => serde_json::from_str::<Json>(raw)
            .map(|v| Sql::Blob(v.to_string().into_bytes()))
            .map_err(|_| bad("expected JSON")),
        ColumnType::Uuid => uuid::Uuid::parse_str(raw)
            .map(|u| Sql::Text(u.hyphenated().to_string()))
            .map_err(|_| bad("expected a UUID")),
        ColumnType::Bytes => STANDARD
            .decode(raw)
            .map(Sql::Blob)
            .map_err(|_| bad("expected base64")),
    }
}

pub fn cursor_to_value(value: &Json) -> Option<Sql> {
    match value {
        Json::Null => Some(Sql::Null),
        Json::Object(m) if m.len() == 1 => {
            let (k, v) = m.iter().next()?;
            match k.as_str() {
                "i" => v.as_i64().map(Sql::Integer),
                "r" => v.as_u64().map(|bits| Sql::Real(f64::from_bits(bits))),
                "t" => v.as_str().map(|s| Sql::Text(s.to_owned())),
                "b" => v
                    .as_str()
                    .and_then(|s| STANDARD.decode(s).ok())
                    .map(Sql::Blob),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(kind: ColumnType, nullable: bool) -> Column {
        Column {
            name: "c".into(),
            kind,
            nullable,
            has_default: false,
            primary_key: false,
        }
    }

    #[test]
    fn converts_by_type() {
        use serde_json::json;
        let ts = col(ColumnType::Timestamp, false);
        assert_eq!(
            json_to_value(&ts, &json!("2026-01-31T18:00:00+01:00")).unwrap(),
            Sql::Text("2026-01-31 17:00:00".into())
        );
        assert_eq!(
            json_to_value(&col(ColumnType::Boolean, false), &json!(true)).unwrap(),
            Sql::Integer(1)
        );
        assert_eq!(
            json_to_value(&col(ColumnType::Bytes, false), &json!("aGk=")).unwrap(),
            Sql::Blob(b"hi".to_vec())
        );
        for (kind, bad) in [
            (ColumnType::Integer, json!(1.5)),
            (ColumnType::Integer, json!("1")),
            (ColumnType::Text, json!(1)),
            (ColumnType::Boolean, json!(1)),
            (ColumnType::Timestamp, json!("yesterday")),
            (ColumnType::Uuid, json!("x")),
            (ColumnType::Bytes, json!("***")),
            (ColumnType::Text, json!(null)),
        ] {
            assert!(
                json_to_value(&col(kind, false), &bad).is_err(),
                "{kind:?} {bad}"
            );
        }
        for bad in ["NaN", "inf", "-infinity", "1e999"] {
            assert!(
                text_to_value(&col(ColumnType::Real, false), bad).is_err(),
                "{bad}"
            );
        }
    }
}
