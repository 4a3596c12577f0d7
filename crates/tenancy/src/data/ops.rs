//! The data API's operations, once for every dialect: an operation becomes a [`Plan`] — the
//! statements [`crate::sql::builder`] writes for it and how their outcomes answer — which an
//! executor ([`super::sqlite`], [`super::postgres`]) runs as one transaction, handing back
//! [`Outcome`]s for [`Plan::finish`].

use serde_json::Value as Json;

use super::query::{encode_cursor, Filter, ListQuery, MAX_LIMIT};
use super::{Object, Page, Table};
use crate::error::{Error, Result};
use crate::sql::builder;
use crate::sql::{SqlDialect, Statement};

/// One data operation, in a form every dialect runs.
pub enum DataOp {
    List(ListQuery),
    Get(String),
    Insert(Vec<Object>),
    Update(String, Object),
    UpdateFiltered(Vec<Filter>, Object),
    Delete(String),
    DeleteFiltered(Vec<Filter>),
}

/// What a [`DataOp`] answers.
pub enum DataOutput {
    Page(Page),
    Row(Object),
    Rows(Vec<Object>),
    Deleted(usize),
    Done,
}

impl DataOutput {
    fn unexpected(what: &str) -> Error {
        Error::Internal(format!("a data operation answered no {what}"))
    }

    pub fn into_page(self) -> Result<Page> {
        match self {
            DataOutput::Page(page) => Ok(page),
            _ => Err(Self::unexpected("page")),
        }
    }

    pub fn into_row(self) -> Result<Object> {
        match self {
            DataOutput::Row(row) => Ok(row),
            _ => Err(Self::unexpected("row")),
        }
    }

    pub fn into_rows(self) -> Result<Vec<Object>> {
        match self {
            DataOutput::Rows(rows) => Ok(rows),
            _ => Err(Self::unexpected("rows")),
        }
    }

    pub fn into_deleted(self) -> Result<usize> {
        match self {
            DataOutput::Deleted(n) => Ok(n),
            _ => Err(Self::unexpected("count")),
        }
    }
}

/// One result row: its object, and the cursor values of its ordering keys (listings).
pub struct Row {
    pub object: Object,
    pub cursor: Vec<Json>,
}

/// What one statement answered.
pub enum Outcome {
    Rows(Vec<Row>),
    Count(i64),
    Affected(u64),
}

enum Finish {
    Page {
        limit: usize,
        fingerprint: String,
        pageable: bool,
        table: String,
    },
    /// One row, or no such row.
    One,
    /// Every row of every statement.
    All,
    /// At least one row changed, or no such row.
    DeletedOne,
    Deleted,
}

/// The statements of an operation, in order, and how their outcomes answer it.
pub struct Plan<'t> {
    pub statements: Vec<Statement<'t>>,
    finish: Finish,
}

impl<'t> Plan<'t> {
    pub fn new(d: &dyn SqlDialect, table: &'t Table, op: &DataOp) -> Result<Plan<'t>> {
        let one = |statement| vec![statement];
        Ok(match op {
            DataOp::List(q) => {
                let list = builder::list(d, table, q)?;
                let mut statements = vec![list.page];
                statements.extend(list.count);
                Plan {
                    statements,
                    finish: Finish::Page {
                        limit: q.limit,
                        fingerprint: q.fingerprint.clone(),
                        pageable: list.pageable,
                        table: table.name.clone(),
                    },
                }
            }
            DataOp::Get(id) => Plan {
                statements: one(builder::get(d, table, id)?),
                finish: Finish::One,
            },
            DataOp::Insert(rows) => Plan {
                statements: builder::insert(d, table, rows)?,
                finish: Finish::All,
            },
            DataOp::Update(id, patch) => Plan {
                statements: one(builder::update(d, table, id, patch)?),
                finish: Finish::One,
            },
            DataOp::UpdateFiltered(filters, patch) => Plan {
                statements: one(builder::update_filtered(d, table, filters, patch)?),
                finish: Finish::All,
            },
            DataOp::Delete(id) => Plan {
                statements: one(builder::delete(d, table, id)?),
                finish: Finish::DeletedOne,
            },
            DataOp::DeleteFiltered(filters) => Plan {
                statements: one(builder::delete_filtered(d, table, filters)?),
                finish: Finish::Deleted,
            },
        })
    }

    /// Whether every statement only reads (a lone read needs no transaction of its own).
    pub fn read_only(&self) -> bool {
        self.statements.iter().all(|s| s.sql.starts_with("SELECT"))
    }

    /// The answer, from the outcomes of the statements in order.
    pub fn finish(self, outcomes: Vec<Outcome>) -> Result<DataOutput> {
        let mut rows = Vec::new();
        let mut count = None;
        let mut affected = 0u64;
        for outcome in outcomes {
            match outcome {
                Outcome::Rows(r) => rows.extend(r),
                Outcome::Count(n) => count = Some(n),
                Outcome::Affected(n) => affected += n,
            }
        }
        Ok(match self.finish {
            Finish::Page {
                limit,
                fingerprint,
                pageable,
                table,
            } => {
                let more = rows.len() > limit;
                if more && !pageable {
                    return Err(Error::InvalidInput(format!(
                        "table {table} has no primary key, so it cannot be paged on PostgreSQL: \
                         narrow the filters or raise the limit (up to {MAX_LIMIT}) to list every \
                         row in one page, or give the table a primary key"
                    )));
                }
                rows.truncate(limit);
                let next = match rows.last() {
                    Some(last) if more => Some(encode_cursor(&fingerprint, last.cursor.clone())),
                    _ => None,
                };
                DataOutput::Page(Page {
                    data: rows.into_iter().map(|r| r.object).collect(),
                    next,
                    count,
                })
            }
            Finish::One => match rows.pop() {
                Some(row) => DataOutput::Row(row.object),
                None => return Err(Error::RowNotFound),
            },
            Finish::All => DataOutput::Rows(rows.into_iter().map(|r| r.object).collect()),
            Finish::DeletedOne if affected == 0 => return Err(Error::RowNotFound),
            Finish::DeletedOne => DataOutput::Done,
            Finish::Deleted => DataOutput::Deleted(usize::try_from(affected).unwrap_or(usize::MAX)),
        })
    }
}
