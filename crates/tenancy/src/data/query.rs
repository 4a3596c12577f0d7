//! The data API's query language (PostgREST-style), parsed against a table's schema into
//! typed filters, orderings and cursors. No SQL here: [`crate::sql::builder`] writes it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::schema::{printable, Column, ColumnType, Table};
use super::value::{cursor_to_value, text_to_value, Value as Sql};
use crate::error::{Error, Result};

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
const MAX_IN_VALUES: usize = 1000;
const MAX_ORDER_KEYS: usize = 8;
const RESERVED: [&str; 5] = ["select", "order", "limit", "cursor", "count"];

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Like,
    In,
    IsNull,
    IsTrue,
    IsFalse,
}

/// One `column=[not.]op.value` condition.
#[derive(Debug, Clone)]
pub struct Filter {
    column: String,
    negate: bool,
    op: Op,
    values: Vec<Sql>,
}

/// Read access for the SQL builder.
impl Filter {
    /// The column tested: a name from the table's schema.
    pub(crate) fn column(&self) -> &str {
        &self.column
    }

    /// Whether the condition was given after `not.`.
    pub(crate) fn negated(&self) -> bool {
        self.negate
    }

    pub(crate) fn op(&self) -> &Op {
        &self.op
    }

    /// The operands, typed by the column (none for `is`).
    pub(crate) fn values(&self) -> &[Sql] {
        &self.values
    }
}

/// A parsed list request.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Output columns, in order.
    pub select: Vec<String>,
    pub filters: Vec<Filter>,
    /// `(column, descending)`, then the primary key as tiebreaker.
    pub order: Vec<(String, bool)>,
    pub limit: usize,
    pub after: Option<Vec<Sql>>,
    pub count: bool,
    /// Binds a cursor to the filters and order it was made for.
    pub fingerprint: String,
}

fn column<'t>(table: &'t Table, name: &str) -> Result<&'t Column> {
    table.column(name).ok_or_else(|| Error::ColumnNotFound {
        column: printable(name),
    })
}

fn bad(message: impl Into<String>) -> Error {
    Error::InvalidFilter(message.into())
}

/// The filters among query parameters (every key that is not reserved names a column).
pub fn parse_filters(table: &Table, params: &[(String, String)]) -> Result<Vec<Filter>> {
    params
        .iter()
        .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
        .map(|(k, v)| parse_filter(table, k, v))
        .collect()
}

fn parse_filter(table: &Table, key: &str, raw: &str) -> Result<Filter> {
    let col = column(table, key)?;
    let (negate, rest) = match raw.strip_prefix("not.") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let (op, operand) = rest
        .split_once('.')
        .ok_or_else(|| bad(format!("{key}: expected operator.value, e.g. {key}=eq.42")))?;
    let one = |v: &str| text_to_value(col, v).map(|s| vec![s]);
    let (op, values) = match op {
        "eq" => (Op::Eq, one(operand)?),
        "neq" => (Op::Neq, one(operand)?),
        "lt" => (Op::Lt, one(operand)?),
        "lte" => (Op::Lte, one(operand)?),
        "gt" => (Op::Gt, one(operand)?),
        "gte" => (Op::Gte, one(operand)?),
        "like" => {
            if col.kind != ColumnType::Text {
                return Err(bad(format!("{key}: like applies to text columns")));
            }
            (Op::Like, vec![Sql::Text(operand.replace('*', "%"))])
        }
        "in" => {
            let list = operand
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| bad(format!("{key}: expected in.(a,b,…)")))?;
            let items = split_list(list).ok_or_else(|| bad(format!("{key}: unbalanced quotes in in.(…)")))?;
            if items.is_empty() || items.len() > MAX_IN_VALUES {
                return Err(bad(format!("{key}: in.(…) takes 1 to {MAX_IN_VALUES} values")));
            }
            let values = items.iter().map(|v| text_to_value(col, v)).collect::<Result<_>>()?;
            (Op::In, values)
        }
        "is" => match operand {
            "null" => (Op::IsNull, vec![]),
            "true" if col.kind == ColumnType::Boolean => (Op::IsTrue, vec![]),
            "false" if col.kind == ColumnType::Boolean => (Op::IsFalse, vec![]),
            _ => return Err(bad(format!("{key}: is takes null (or true/false on booleans)"))),
        },
        other => {
            return Err(bad(format!(
                "{key}: unknown operator {:?}; use eq, neq, lt, lte, gt, gte, like, in, is, optionally after not.",
                printable(other)
            )))
        }
    };
    Ok(Filter {
        column: col.name.clone(),
        negate,
        op,
        values,
    })
}

/// `a,b,"c,d"` → `[a, b, c,d]`; `None` on an unterminated quote.
fn split_list(list: &str) -> Option<Vec<String>> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => items.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    if quoted {
        return None;
    }
    if !list.is_empty() {
        items.push(current);
    }
    Some(items)
}

fn single<'a>(params: &'a [(String, String)], key: &str) -> Result<Option<&'a str>> {
    let mut found = params.iter().filter(|(k, _)| k == key);
    let first = found.next().map(|(_, v)| v.as_str());
    if found.next().is_some() {
        return Err(bad(format!("{key} is given twice")));
    }
    Ok(first)
}

/// Parses a list request: filters, `select`, `order`, `limit`, `cursor`, `count`.
pub fn parse_list(table: &Table, params: &[(String, String)]) -> Result<ListQuery> {
    let filters = parse_filters(table, params)?;
    let select = match single(params, "select")? {
        None | Some("*") => table.columns.iter().map(|c| c.name.clone()).collect(),
        Some(list) => {
            let mut cols: Vec<String> = Vec::new();
            for name in list.split(',') {
                let name = name.trim();
                let col = column(table, name)?;
                if !cols.contains(&col.name) {
                    cols.push(col.name.clone());
                }
            }
            cols
        }
    };
    let mut order = Vec::new();
    if let Some(spec) = single(params, "order")? {
        for key in spec.split(',') {
            let (name, dir) = match key.rsplit_once('.') {
                Some((n, "asc")) => (n, false),
                Some((n, "desc")) => (n, true),
                Some((_, other)) if table.column(key).is_none() => {
                    return Err(bad(format!(
                        "order: unknown direction {:?}; use asc or desc",
                        printable(other)
                    )))
                }
                _ => (key, false),
            };
            let col = column(table, name)?;
            if order.iter().any(|(c, _)| c == &col.name) {
                return Err(bad(format!("order: {} appears twice", col.name)));
            }
            order.push((col.name.clone(), dir));
        }
        if order.len() > MAX_ORDER_KEYS {
            return Err(bad(format!("order: at most {MAX_ORDER_KEYS} keys")));
        }
    }
    let user_order = order.clone();
    for pk in tiebreakers(table) {
        if !order.iter().any(|(c, _)| *c == pk) {
            order.push((pk, false));
        }
    }
    let limit = match single(params, "limit")? {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}"
                )))
            }
        },
    };
    let count = match single(params, "count")? {
        None => false,
        Some("exact") => true,
        Some(_) => return Err(bad("count takes exact")),
    };
    let fingerprint = fingerprint(table, params, &user_order);
    let after = match single(params, "cursor")? {
        None => None,
        Some(raw) => Some(decode_cursor(raw, &fingerprint, order.len())?),
    };
    Ok(ListQuery {
        select,
        filters,
        order,
        limit,
        after,
        count,
        fingerprint,
    })
}

/// Primary-key columns (or SQLite's rowid) make every ordering total.
fn tiebreakers(table: &Table) -> Vec<String> {
    if table.primary_key.is_empty() {
        vec!["rowid".to_owned()]
    } else {
        table.primary_key.clone()
    }
}

fn fingerprint(table: &Table, params: &[(String, String)], order: &[(String, bool)]) -> String {
    let mut filters: Vec<String> = params
        .iter()
        .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    filters.sort();
    let text = format!("{}|{}|{:?}", table.name, filters.join("&"), order);
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

pub fn encode_cursor(fingerprint: &str, values: Vec<Value>) -> String {
    let json = serde_json::json!({ "f": fingerprint, "v": values });
    URL_SAFE_NO_PAD.encode(json.to_string())
}

fn decode_cursor(raw: &str, fingerprint: &str, keys: usize) -> Result<Vec<Sql>> {
    let invalid = || {
        bad("cursor: not a cursor of this listing (pass `next` back with the same filters and order)")
    };
    if raw.len() > 8192 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let json: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if json["f"].as_str() != Some(fingerprint) {
        return Err(invalid());
    }
    let values = json["v"].as_array().ok_or_else(invalid)?;
    if values.len() != keys {
        return Err(invalid());
    }
    values
        .iter()
        .map(|v| cursor_to_value(v).ok_or_else(invalid))
        .collect()
}

/// A bulk update or delete must be narrowed by at least one filter.
pub(crate) fn require_filters(filters: &[Filter], what: &str) -> Result<()> {
    if filters.is_empty() {
        return Err(Error::InvalidFilter(format!(
            "a bulk {what} needs at least one filter"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_in_lists() {
        assert_eq!(split_list("a,b").unwrap(), vec!["a", "b"]);
        assert_eq!(split_list(r#""a,b",c"#).unwrap(), vec!["a,b", "c"]);
        assert_eq!(split_list(r#""say ""hi""""#).unwrap(), vec![r#"say "hi""#]);
        assert!(split_list(r#""open"#).is_none());
        assert!(split_list("").unwrap().is_empty());
    }
}
