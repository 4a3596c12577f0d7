//! Plans: what a tenant may use (limits), what it may do (feature flags) and what it costs
//! (a price model), written once in the configuration and given to tenants by name.
//!
//! A tenant carries the name of its plan (none: the default plan) and may override any
//! limit, flag or its budget ([`PlanOverrides`]); [`Plans::effective`] resolves the two
//! into what the request path enforces. Limits are named: the built-in kinds
//! ([`LimitKind`]) and each plan's row limits by their own name, so that one override map
//! and one problem code (`quota_exceeded` naming the limit) serve them all.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tenant::Mode;

/// An amount of money in millionths of the currency unit: prices per event are fractions
/// of a cent, and floating point would make a month's sum depend on the order it was added
/// in. Written and read as a decimal string (`"265.00"`, `"0.0001"`); TOML numbers are
/// accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(pub i64);

impl Money {
    pub const ZERO: Money = Money(0);
    const SCALE: i64 = 1_000_000;

    pub fn micros(self) -> i64 {
        self.0
    }

    /// `self × quantity`, saturating.
    pub fn times(self, quantity: u64) -> Money {
        Money(
            self.0
                .saturating_mul(i64::try_from(quantity).unwrap_or(i64::MAX)),
        )
    }

    /// The amount as a float of whole units, for ratios and charts only.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Self::SCALE as f64
    }
}

impl fmt::Display for Money {
    /// Two decimals at least, more when the amount has them (`12.50`, `0.0001`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / Self::SCALE as u64;
        let mut frac = format!("{:06}", abs % Self::SCALE as u64);
        while frac.len() > 2 && frac.ends_with('0') {
            frac.pop();
        }
        write!(f, "{sign}{whole}.{frac}")
    }
}

impl FromStr for Money {
    type Err = Error;

    fn from_str(s: &str) -> Result<Money> {
        let bad = || Error::InvalidInput(format!("{s:?} is not an amount (like \"265.00\")"));
        let t = s.trim();
        let (negative, t) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
        if whole.is_empty() && frac.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || frac.len() > 6
            || whole.len() > 12
        {
            return Err(bad());
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let frac: i64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
        let micros = whole * Self::SCALE + frac;
        Ok(Money(if negative { -micros } else { micros }))
    }
}

impl Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Money, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => format!("{f:.6}"),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The quantities usage metering counts per tenant per day, and that a price model may
/// price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Requests that reached the tenant (any route that resolved it).
    Requests,
    /// Data API reads (list, get).
    Reads,
    /// Data API writes (insert, update, delete, upsert).
    Writes,
    RowsInserted,
    RowsUpdated,
    RowsDeleted,
    /// Rows deleted by the retention job.
    RowsExpired,
    /// Distinct users who made a request that day.
    ActiveUsers,
    /// The tenant's storage, sampled; priced per GiB for the month.
    StorageBytes,
}

impl Metric {
    pub const ALL: [Metric; 9] = [
        Metric::Requests,
        Metric::Reads,
        Metric::Writes,
        Metric::RowsInserted,
        Metric::RowsUpdated,
        Metric::RowsDeleted,
        Metric::RowsExpired,
        Metric::ActiveUsers,
        Metric::StorageBytes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Requests => "requests",
            Metric::Reads => "reads",
            Metric::Writes => "writes",
            Metric::RowsInserted => "rows_inserted",
            Metric::RowsUpdated => "rows_updated",
            Metric::RowsDeleted => "rows_deleted",
            Metric::RowsExpired => "rows_expired",
            Metric::ActiveUsers => "active_users",
            Metric::StorageBytes => "storage_bytes",
        }
    }
}

impl FromStr for Metric {
    type Err = Error;

    fn from_str(s: &str) -> Result<Metric> {
        Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown metric {s:?}; known: {}",
                    Metric::ALL.map(Metric::as_str).join(", ")
                ))
            })
    }
}

/// A plan's price: a base price per month plus a price per unit of metered quantities
/// (`storage_bytes` is priced per GiB of the month's latest sample).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceModel {
    #[serde(default = "default_currency")]
    pub currency: String,
    #[serde(default)]
    pub base: Money,
    #[serde(default)]
    pub per_unit: BTreeMap<Metric, Money>,
}

fn default_currency() -> String {
    "USD".into()
}

/// The built-in limit kinds (row limits are named by the plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Members of the tenant, pending invitations included.
    Members,
    /// Live (unrevoked, unexpired) API keys of the tenant.
    ApiKeys,
    /// Tenants a user may own, counted when the user creates one on this plan.
    OwnedTenants,
    /// The tenant's storage in bytes, as last sampled.
    StorageBytes,
    /// Requests per minute, sustained.
    RequestsPerMinute,
    /// Requests allowed at once above the sustained rate.
    Burst,
}

impl LimitKind {
    pub const ALL: [LimitKind; 6] = [
        LimitKind::Members,
        LimitKind::ApiKeys,
        LimitKind::OwnedTenants,
        LimitKind::StorageBytes,
        LimitKind::RequestsPerMinute,
        LimitKind::Burst,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Members => "members",
            LimitKind::ApiKeys => "api_keys",
            LimitKind::OwnedTenants => "owned_tenants",
            LimitKind::StorageBytes => "storage_bytes",
            LimitKind::RequestsPerMinute => "requests_per_minute",
            LimitKind::Burst => "burst",
        }
    }
}

/// A limit on the rows of one tenant table, optionally only those matching a filter in the
/// data API's language (`status=eq.active`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowLimit {
    /// The limit's name, as problems, usage and overrides name it (`active_projects`).
    pub name: String,
    pub table: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    pub max: u64,
}

/// A plan's limits; absent: unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_tenants: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<RowLimit>,
}

impl Limits {
    fn builtin(&self, kind: LimitKind) -> Option<u64> {
        match kind {
            LimitKind::Members => self.members,
            LimitKind::ApiKeys => self.api_keys,
            LimitKind::OwnedTenants => self.owned_tenants,
            LimitKind::StorageBytes => self.storage_bytes,
            LimitKind::RequestsPerMinute => self.requests_per_minute,
            LimitKind::Burst => self.burst,
        }
    }
}

/// Rows older than `days` by `column` are deleted by the retention job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub table: String,
    pub column: String,
    pub days: u32,
}

/// One plan, as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    /// Where a tenant created on this plan is placed, unless the request says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub features: BTreeMap<String, bool>,
    #[serde(default)]
    pub price: PriceModel,
    /// The monthly budget of its tenants unless they set their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Money>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<Retention>,
}

/// A tenant's own deviations from its plan. `limits` maps a limit's name to its maximum
/// (`null`: unlimited).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Option<u64>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Money>,
}

impl PlanOverrides {
    pub fn is_empty(&self) -> bool {
        self == &PlanOverrides::default()
    }
}

/// What a tenant may use and do: its plan with its overrides applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effective {
    pub plan: String,
    /// Every limit by name (`None`: unlimited).
    pub limits: BTreeMap<String, Option<u64>>,
    pub features: BTreeMap<String, bool>,
    pub budget: Option<Money>,
    /// The plan's row limits with their effective maximum (`None`: lifted by an override).
    #[serde(skip)]
    pub rows: Vec<(RowLimit, Option<u64>)>,
}

impl Effective {
    pub fn limit(&self, kind: LimitKind) -> Option<u64> {
        self.limits.get(kind.as_str()).copied().flatten()
    }

    /// A flag the plan or the tenant set; flags nobody set are off.
    pub fn feature(&self, flag: &str) -> bool {
        self.features.get(flag).copied().unwrap_or(false)
    }
}

/// Every configured plan, the default one and the tables gated by a flag.
#[derive(Debug, Clone, Default)]
pub struct Plans {
    plans: Vec<Plan>,
    default: Option<String>,
    /// Table → the flag that must be on for the data API to serve it.
    gated_tables: BTreeMap<String, String>,
    /// Each plan as a tenant without overrides has it: resolved once, since every request
    /// of such a tenant asks.
    resolved: BTreeMap<String, std::sync::Arc<Effective>>,
}

impl Plans {
    /// Checks the plans: names unique and well formed, the default one of them, row limits
    /// named uniquely without colliding with a built-in kind, prices of known metrics,
    /// retention of at least a day, gates naming flags some plan has.
    pub fn new(
        plans: Vec<Plan>,
        default: Option<String>,
        gated_tables: BTreeMap<String, String>,
    ) -> Result<Plans> {
        let bad = |m: String| Err(Error::InvalidInput(m));
        for (i, plan) in plans.iter().enumerate() {
            if !is_name(&plan.name) {
                return bad(format!(
                    "plan name {:?}: use 1-64 of a-z, 0-9, '_' and '-', starting with a letter",
                    plan.name
                ));
            }
            if plans[..i].iter().any(|p| p.name == plan.name) {
                return bad(format!("plan {:?} is configured twice", plan.name));
            }
            let mut names: Vec<&str> = LimitKind::ALL.iter().map(|k| k.as_str()).collect();
            for row in &plan.limits.rows {
                if !is_name(&row.name) {
                    return bad(format!(
                        "plan {:?}: row limit name {:?}: use 1-64 of a-z, 0-9, '_' and '-'",
                        plan.name, row.name
                    ));
                }
                if names.contains(&row.name.as_str()) {
                    return bad(format!(
                        "plan {:?}: the limit name {:?} is taken",
                        plan.name, row.name
                    ));
                }
                names.push(&row.name);
                if row.table.trim().is_empty() {
                    return bad(format!(
                        "plan {:?}: row limit {:?} names no table",
                        plan.name, row.name
                    ));
                }
            }
            for flag in plan.features.keys() {
                if !is_name(flag) {
                    return bad(format!("plan {:?}: feature name {flag:?}", plan.name));
                }
            }
            if plan.price.base < Money::ZERO
                || plan.price.per_unit.values().any(|p| *p < Money::ZERO)
            {
                return bad(format!("plan {:?}: prices cannot be negative", plan.name));
            }
            if plan.budget.is_some_and(|b| b <= Money::ZERO) {
                return bad(format!("plan {:?}: a budget must be above zero", plan.name));
            }
            for r in &plan.retention {
                if r.days == 0 {
                    return bad(format!(
                        "plan {:?}: retention of {:?} must keep rows at least a day",
                        plan.name, r.table
                    ));
                }
            }
        }
        if let Some(default) = &default {
            if !plans.iter().any(|p| &p.name == default) {
                return bad(format!("the default plan {default:?} is not configured"));
            }
        }
        for (table, flag) in &gated_tables {
            if !plans.iter().any(|p| p.features.contains_key(flag)) {
                return bad(format!(
                    "table {table:?} is gated by the feature {flag:?}, which no plan sets"
                ));
            }
        }
        let mut plans = Plans {
            plans,
            default,
            gated_tables,
            resolved: BTreeMap::new(),
        };
        let none = PlanOverrides::default();
        plans.resolved = plans
            .plans
            .iter()
            .map(|p| (p.name.clone(), std::sync::Arc::new(plans.resolve(p, &none))))
            .collect();
        Ok(plans)
    }

    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    pub fn all(&self) -> &[Plan] {
        &self.plans
    }

    pub fn default_plan(&self) -> Option<&str> {
        self.default.as_deref()
    }

    pub fn get(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }

    /// The plan named, refused unless configured.
    pub fn require(&self, name: &str) -> Result<&Plan> {
        self.get(name).ok_or_else(|| Error::UnknownPlan {
            plan: name.to_owned(),
            known: self.plans.iter().map(|p| p.name.clone()).collect(),
        })
    }

    /// The flag a table is gated by, if any.
    pub fn gate(&self, table: &str) -> Option<&str> {
        self.gated_tables.get(table).map(String::as_str)
    }

    /// Checks overrides against the plan they apply to: limits it knows, flags well named,
    /// a budget above zero.
    pub fn check_overrides(&self, plan: Option<&str>, overrides: &PlanOverrides) -> Result<()> {
        let plan = plan.or(self.default.as_deref()).and_then(|p| self.get(p));
        for name in overrides.limits.keys() {
            let known = LimitKind::ALL.iter().any(|k| k.as_str() == name)
                || plan.is_some_and(|p| p.limits.rows.iter().any(|r| &r.name == name));
            if !known {
                return Err(Error::InvalidInput(format!(
                    "unknown limit {name:?}; known: {}",
                    self.limit_names(plan).join(", ")
                )));
            }
        }
        for flag in overrides.features.keys() {
            if !is_name(flag) {
                return Err(Error::InvalidInput(format!("feature name {flag:?}")));
            }
        }
        if overrides.budget.is_some_and(|b| b <= Money::ZERO) {
            return Err(Error::InvalidInput("a budget must be above zero".into()));
        }
        Ok(())
    }

    fn limit_names(&self, plan: Option<&Plan>) -> Vec<String> {
        let mut names: Vec<String> = LimitKind::ALL
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect();
        if let Some(p) = plan {
            names.extend(p.limits.rows.iter().map(|r| r.name.clone()));
        }
        names
    }

    /// A tenant's plan (`plan`, else the default) with its overrides applied. `None` when no
    /// plan applies: nothing is limited.
    pub fn effective(
        &self,
        plan: Option<&str>,
        overrides: &PlanOverrides,
    ) -> Option<std::sync::Arc<Effective>> {
        let name = plan.or(self.default.as_deref())?;
        if overrides.is_empty() {
            return self.resolved.get(name).cloned();
        }
        Some(std::sync::Arc::new(
            self.resolve(self.get(name)?, overrides),
        ))
    }

    fn resolve(&self, plan: &Plan, overrides: &PlanOverrides) -> Effective {
        let mut limits = BTreeMap::new();
        for kind in LimitKind::ALL {
            limits.insert(kind.as_str().to_owned(), plan.limits.builtin(kind));
        }
        let mut rows = Vec::new();
        for row in &plan.limits.rows {
            let max = overrides
                .limits
                .get(&row.name)
                .copied()
                .unwrap_or(Some(row.max));
            limits.insert(row.name.clone(), max);
            rows.push((row.clone(), max));
        }
        for (name, max) in &overrides.limits {
            if let Some(slot) = limits.get_mut(name) {
                *slot = *max;
            }
        }
        let mut features = plan.features.clone();
        features.extend(overrides.features.iter().map(|(k, v)| (k.clone(), *v)));
        Effective {
            plan: plan.name.clone(),
            limits,
            features,
            budget: overrides.budget.or(plan.budget),
            rows,
        }
    }
}

fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str) -> Plan {
        Plan {
            name: name.into(),
            display_name: String::new(),
            mode: None,
            store: None,
            limits: Limits::default(),
            features: BTreeMap::new(),
            price: PriceModel::default(),
            budget: None,
            retention: Vec::new(),
        }
    }

    #[test]
    fn money_reads_and_writes_decimals() {
        for (text, micros, shown) in [
            ("265.00", 265_000_000, "265.00"),
            ("0.0001", 100, "0.0001"),
            ("12.5", 12_500_000, "12.50"),
            ("7", 7_000_000, "7.00"),
            (".5", 500_000, "0.50"),
        ] {
            let m: Money = text.parse().unwrap();
            assert_eq!(m.micros(), micros, "{text}");
            assert_eq!(m.to_string(), shown, "{text}");
        }
        for bad in ["", ".", "1.2345678", "abc", "1,5", "1e3", "--1", "1.2.3"] {
            assert!(bad.parse::<Money>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn overrides_apply_over_the_plan() {
        let mut free = plan("free");
        free.limits.members = Some(30);
        free.limits.rows.push(RowLimit {
            name: "active_projects".into(),
            table: "projects".into(),
            filter: Some("status=eq.active".into()),
            max: 3,
        });
        free.features.insert("bot".into(), false);
        let plans = Plans::new(
            vec![free, plan("premium")],
            Some("free".into()),
            BTreeMap::new(),
        )
        .unwrap();
        let mut o = PlanOverrides::default();
        o.limits.insert("active_projects".into(), Some(10));
        o.limits.insert("members".into(), None);
        o.features.insert("bot".into(), true);
        plans.check_overrides(None, &o).unwrap();
        let e = plans.effective(None, &o).unwrap();
        assert_eq!(e.plan, "free");
        assert_eq!(e.limit(LimitKind::Members), None);
        assert_eq!(e.limits["active_projects"], Some(10));
        assert_eq!(e.rows[0].1, Some(10));
        assert!(e.feature("bot"));
        assert!(!e.feature("analytics"));

        let mut unknown = PlanOverrides::default();
        unknown.limits.insert("guilds".into(), Some(1));
        assert!(plans.check_overrides(None, &unknown).is_err());
        assert!(plans.check_overrides(Some("premium"), &o).is_err());
    }

    #[test]
    fn bad_plans_are_refused() {
        let twice = Plans::new(vec![plan("a"), plan("a")], None, BTreeMap::new());
        assert!(twice.is_err());
        let no_default = Plans::new(vec![plan("a")], Some("b".into()), BTreeMap::new());
        assert!(no_default.is_err());
        assert!(Plans::new(vec![plan("Free plan")], None, BTreeMap::new()).is_err());
        let mut clash = plan("a");
        clash.limits.rows.push(RowLimit {
            name: "members".into(),
            table: "t".into(),
            filter: None,
            max: 1,
        });
        assert!(Plans::new(vec![clash], None, BTreeMap::new()).is_err());
        let gate = BTreeMap::from([("analytics".to_owned(), "analytics".to_owned())]);
        assert!(Plans::new(vec![plan("a")], None, gate).is_err());
    }
}
