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

impl DataOp {
    /// How many rows the operation may add to a table: `None` for one that never adds any
    /// (reads, deletes), `Some(None)` for any number (a filtered update).
    pub fn rows_it_may_add(&self) -> Option<Option<u64>> {
        match self {
            DataOp::Insert(rows) => Some(Some(rows.len() as u64)),
            DataOp::Update(..) => Some(Some(1)),
            DataOp::UpdateFiltered(..) => Some(None),
            DataOp::List(_) | DataOp::Get(_) | DataOp::Delete(_) | DataOp::DeleteFiltered(_) => {
                None
            }
        }
    }
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

/// A row limit a write must keep: after it, the rows of the table that `filter` (the data
/// API's query language, `status=eq.active`) matches may number at most `max` — unless
/// the write did not add to them (a tenant over a lowered limit may still change and
/// delete rows). Checked in the write's own transaction, by counting before and after,
/// with writers of one tenant's table taking turns (`lock_key`).
#[derive(Debug, Clone)]
pub struct RowGuard {
    pub name: String,
    pub filter: Vec<(String, String)>,
    pub max: u64,
    pub lock_key: i64,
}

/// Where a guard's counts are among a plan's outcomes.
struct GuardCheck {
    name: String,
    max: u64,
    before: usize,
    after: usize,
}

/// The statements of an operation, in order, and how their outcomes answer it.
pub struct Plan<'t> {
    pub statements: Vec<Statement<'t>>,
    finish: Finish,
    guards: Vec<GuardCheck>,
    /// Statements that serve the guards, not the answer.
    guard_statements: Vec<bool>,
}

impl<'t> Plan<'t> {
    /// The plan of `op`, checking `guards` if it is a write that may add rows.
    pub fn guarded(
        d: &dyn SqlDialect,
        table: &'t Table,
        op: &DataOp,
        guards: &[RowGuard],
    ) -> Result<Plan<'t>> {
        let mut plan = Plan::new(d, table, op)?;
        // Rows the write may add to a guard's count (`None`: any number).
        let Some(adds) = op.rows_it_may_add() else {
            return Ok(plan);
        };
        if guards.is_empty() {
            return Ok(plan);
        }
        let mut before = Vec::new();
        let mut after = Vec::new();
        let mut checks = Vec::new();
        let lock = builder::transaction_lock(d, guards[0].lock_key);
        let offset = usize::from(lock.is_some());
        for (i, g) in guards.iter().enumerate() {
            let filters = super::query::parse_filters(table, &g.filter)?;
            // Exact counts (a count that stopped at a bound could not tell whether a write
            // to a tenant over a lowered limit added a row), skipped where the table is
            // known to hold few enough rows that the write cannot reach the limit: before
            // it, `max - adds`; after it, `max`.
            let headroom = |room: u64| {
                adds.and_then(|n| room.checked_sub(n))
                    .and_then(|b| i64::try_from(b).ok())
            };
            before.push(builder::count_unless_below(
                d,
                table,
                &filters,
                headroom(g.max),
            )?);
            after.push(builder::count_unless_below(
                d,
                table,
                &filters,
                adds.and(i64::try_from(g.max).ok()),
            )?);
            checks.push(GuardCheck {
                name: g.name.clone(),
                max: g.max,
                before: offset + i,
                after: offset + guards.len() + plan.statements.len() + i,
            });
        }
        let work = std::mem::take(&mut plan.statements);
        let n_work = work.len();
        plan.statements = lock
            .into_iter()
            .chain(before)
            .chain(work)
            .chain(after)
            .collect();
        plan.guard_statements = (0..plan.statements.len())
            .map(|i| i < offset + guards.len() || i >= offset + guards.len() + n_work)
            .collect();
        plan.guards = checks;
        Ok(plan)
    }

    /// Whether the outcomes must pass [`Plan::check`] before the transaction commits.
    pub fn is_guarded(&self) -> bool {
        !self.guards.is_empty()
    }

    /// `QuotaExceeded` for the first guard the write broke: it added rows and the count
    /// is now past the maximum. Run before committing; on error, roll back.
    pub fn check(&self, outcomes: &[Outcome]) -> Result<()> {
        let count = |i: usize| match outcomes.get(i) {
            Some(Outcome::Count(-1)) => Ok(None),
            Some(Outcome::Count(n)) => Ok(Some(u64::try_from(*n).unwrap_or(0))),
            _ => Err(Error::Internal("a limit's count is missing".into())),
        };
        for g in &self.guards {
            // `None`: not counted, the table being too small to reach the limit.
            let (before, after) = (count(g.before)?, count(g.after)?);
            let Some(after) = after else { continue };
            if after > g.max && before.is_none_or(|before| after > before) {
                let before = before.unwrap_or(after);
                return Err(Error::QuotaExceeded {
                    limit: g.name.clone(),
                    current: before,
                    max: g.max,
                });
            }
        }
        Ok(())
    }

    pub fn new(d: &dyn SqlDialect, table: &'t Table, op: &DataOp) -> Result<Plan<'t>> {
        let one = |statement| vec![statement];
        Ok(match op {
            DataOp::List(q) => {
                let list = builder::list(d, table, q)?;
                let mut statements = vec![list.page];
                statements.extend(list.count);
                Plan::of(
                    statements,
                    Finish::Page {
                        limit: q.limit,
                        fingerprint: q.fingerprint.clone(),
                        pageable: list.pageable,
                        table: table.name.clone(),
                    },
                )
            }
            DataOp::Get(id) => Plan::of(one(builder::get(d, table, id)?), Finish::One),
            DataOp::Insert(rows) => Plan::of(builder::insert(d, table, rows)?, Finish::All),
            DataOp::Update(id, patch) => {
                Plan::of(one(builder::update(d, table, id, patch)?), Finish::One)
            }
            DataOp::UpdateFiltered(filters, patch) => Plan::of(
                one(builder::update_filtered(d, table, filters, patch)?),
                Finish::All,
            ),
            DataOp::Delete(id) => Plan::of(one(builder::delete(d, table, id)?), Finish::DeletedOne),
            DataOp::DeleteFiltered(filters) => Plan::of(
                one(builder::delete_filtered(d, table, filters)?),
                Finish::Deleted,
            ),
        })
    }

    fn of(statements: Vec<Statement<'t>>, finish: Finish) -> Plan<'t> {
        Plan {
            statements,
            finish,
            guards: Vec::new(),
            guard_statements: Vec::new(),
        }
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
        let guard_statements = self.guard_statements;
        let answering = outcomes
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !guard_statements.get(*i).copied().unwrap_or(false))
            .map(|(_, o)| o);
        for outcome in answering {
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
