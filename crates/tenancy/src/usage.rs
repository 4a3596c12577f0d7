//! Usage metering and cost: what a tenant used per UTC day ([`Metric`]), counted in memory
//! by the [`Meter`] and written to the catalog in batches; the reports read back
//! ([`UsageReport`]); and what the usage costs under a plan's price model
//! ([`CostEstimate`]), with the budget thresholds that raise alerts.
//!
//! Nothing here touches a database: the engine (`engine/usage.rs`) drives it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::identity::UserId;
use crate::plans::{Metric, Money, PriceModel};
use crate::tenant::TenantId;

/// How usage is written and storage sampled (`[usage]` in `tenancy.toml`).
#[derive(Debug, Clone, Copy)]
pub struct UsageConfig {
    /// Whether requests and data operations are counted at all (off: nothing is metered,
    /// and cost estimates see the base price only). On by default.
    pub enabled: bool,
    /// How often counted usage is written to the catalog (one transaction each time).
    pub flush_every: Duration,
    /// How often `tenancy serve` samples the storage of tenants that were written to, and
    /// of those not sampled yet today.
    pub storage_sample_every: Duration,
}

impl Default for UsageConfig {
    fn default() -> UsageConfig {
        UsageConfig {
            enabled: true,
            flush_every: Duration::from_secs(10),
            storage_sample_every: Duration::from_secs(300),
        }
    }
}

/// The percentages of a monthly budget whose crossing by the month-to-date cost raises an
/// alert, once each per tenant and month.
pub const BUDGET_THRESHOLDS: [u32; 3] = [50, 80, 100];

/// The longest range a usage report covers, in days.
pub const MAX_REPORT_DAYS: i64 = 366;

/// Bytes in a GiB: storage is priced per GiB.
const GIB: i128 = 1 << 30;

/// One quantity of one tenant on one day. `label` is empty but for `requests` counted per
/// API key (the key's label, or its id when it has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageCount {
    pub tenant: TenantId,
    pub day: NaiveDate,
    pub metric: Metric,
    pub label: String,
    pub value: u64,
}

/// A tenant's storage as measured at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StorageSample {
    pub tenant: TenantId,
    pub bytes: u64,
    pub sampled_at: DateTime<Utc>,
}

/// What one flush writes, in one catalog transaction: counts to add, users seen (inserted
/// or ignored, so that replicas do not count a user twice) and storage samples (the
/// latest wins).
#[derive(Debug, Clone, Default)]
pub struct UsageBatch {
    pub counts: Vec<UsageCount>,
    pub active_users: Vec<(TenantId, NaiveDate, UserId)>,
    pub samples: Vec<StorageSample>,
}

impl UsageBatch {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.active_users.is_empty() && self.samples.is_empty()
    }

    /// The tenants the batch has anything of.
    pub fn tenants(&self) -> BTreeSet<TenantId> {
        self.counts
            .iter()
            .map(|c| c.tenant)
            .chain(self.active_users.iter().map(|(t, _, _)| *t))
            .chain(self.samples.iter().map(|s| s.tenant))
            .collect()
    }
}

/// The counts of one tenant on one day, not written yet.
#[derive(Debug, Default)]
struct DayCounts {
    counts: [u64; Metric::ALL.len()],
    /// `requests` per API key label.
    labels: HashMap<String, u64>,
    users: HashSet<UserId>,
}

fn index(metric: Metric) -> usize {
    Metric::ALL
        .iter()
        .position(|m| *m == metric)
        .unwrap_or_default()
}

const SHARDS: usize = 32;

type Shard = HashMap<(TenantId, NaiveDate), DayCounts>;

/// Usage counted since the last flush, in memory. Requests of different tenants take
/// different locks (the map is sharded by tenant), each held for one map update; a flush
/// swaps every shard for an empty one and, should the write fail, adds what it took back.
pub struct Meter {
    shards: Vec<Mutex<Shard>>,
    samples: Mutex<HashMap<TenantId, StorageSample>>,
    /// Tenants whose rows changed since the storage sampler last looked.
    written: Mutex<HashSet<TenantId>>,
}

impl Default for Meter {
    fn default() -> Meter {
        Meter {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            samples: Mutex::new(HashMap::new()),
            written: Mutex::new(HashSet::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Meter {
    fn shard(&self, tenant: TenantId) -> &Mutex<Shard> {
        &self.shards[(tenant.0.as_u128() % SHARDS as u128) as usize]
    }

    fn with_day(&self, tenant: TenantId, day: NaiveDate, f: impl FnOnce(&mut DayCounts)) {
        f(lock(self.shard(tenant)).entry((tenant, day)).or_default())
    }

    /// Adds `n` to a counted metric. `storage_bytes` is a sample, not a count: use
    /// [`Meter::sample`]; `active_users` are counted by [`Meter::request`].
    pub fn add(&self, tenant: TenantId, day: NaiveDate, metric: Metric, n: u64) {
        if n == 0 || matches!(metric, Metric::StorageBytes | Metric::ActiveUsers) {
            return;
        }
        if matches!(
            metric,
            Metric::RowsInserted | Metric::RowsUpdated | Metric::RowsDeleted | Metric::RowsExpired
        ) {
            lock(&self.written).insert(tenant);
        }
        self.with_day(tenant, day, |d| {
            d.counts[index(metric)] = d.counts[index(metric)].saturating_add(n)
        });
    }

    /// One request that reached the tenant: by an API key with this label, or by this user.
    pub fn request(
        &self,
        tenant: TenantId,
        day: NaiveDate,
        label: Option<&str>,
        user: Option<UserId>,
    ) {
        self.with_day(tenant, day, |d| {
            d.counts[index(Metric::Requests)] += 1;
            if let Some(label) = label {
                match d.labels.get_mut(label) {
                    Some(n) => *n += 1,
                    None => {
                        d.labels.insert(label.to_owned(), 1);
                    }
                }
            }
            if let Some(user) = user {
                d.users.insert(user);
            }
        });
    }

    /// A storage sample, written by the next flush (a later one replaces it).
    pub fn sample(&self, sample: StorageSample) {
        let mut samples = lock(&self.samples);
        match samples.get(&sample.tenant) {
            Some(held) if held.sampled_at > sample.sampled_at => {}
            _ => {
                samples.insert(sample.tenant, sample);
            }
        }
    }

    /// The tenants written to since the last call.
    pub fn take_written(&self) -> HashSet<TenantId> {
        std::mem::take(&mut *lock(&self.written))
    }

    /// Everything counted so far, leaving the meter empty.
    pub fn take(&self) -> UsageBatch {
        let mut batch = UsageBatch::default();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *lock(shard));
            for ((tenant, day), d) in taken {
                for (i, metric) in Metric::ALL.iter().enumerate() {
                    if d.counts[i] > 0 {
                        batch.counts.push(UsageCount {
                            tenant,
                            day,
                            metric: *metric,
                            label: String::new(),
                            value: d.counts[i],
                        });
                    }
                }
                for (label, value) in d.labels {
                    batch.counts.push(UsageCount {
                        tenant,
                        day,
                        metric: Metric::Requests,
                        label,
                        value,
                    });
                }
                batch
                    .active_users
                    .extend(d.users.into_iter().map(|u| (tenant, day, u)));
            }
        }
        batch.samples = std::mem::take(&mut *lock(&self.samples))
            .into_values()
            .collect();
        batch
    }

    /// Adds back a batch that could not be written, for the next flush.
    pub fn restore(&self, batch: UsageBatch) {
        for c in batch.counts {
            self.with_day(c.tenant, c.day, |d| {
                if c.label.is_empty() {
                    let i = index(c.metric);
                    d.counts[i] = d.counts[i].saturating_add(c.value);
                } else {
                    *d.labels.entry(c.label).or_default() += c.value;
                }
            });
        }
        for (tenant, day, user) in batch.active_users {
            self.with_day(tenant, day, |d| {
                d.users.insert(user);
            });
        }
        for s in batch.samples {
            self.sample(s);
        }
    }
}

/// An inclusive range of UTC days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DayRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl DayRange {
    /// The range `from`..=`to` (`YYYY-MM-DD`); without `from`, the first day of `to`'s
    /// month; without `to`, `today`. Refused (`InvalidDateRange`): a date that is not one,
    /// `from` after `to`, more than [`MAX_REPORT_DAYS`] days.
    pub fn parse(from: Option<&str>, to: Option<&str>, today: NaiveDate) -> Result<DayRange> {
        let day = |name: &str, raw: &str| {
            NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").map_err(|_| {
                Error::InvalidDateRange(format!("{name}={raw:?} is not a date like 2026-01-31"))
            })
        };
        let to = match to {
            Some(raw) => day("to", raw)?,
            None => today,
        };
        let from = match from {
            Some(raw) => day("from", raw)?,
            None => month_start(to),
        };
        if from > to {
            return Err(Error::InvalidDateRange(format!(
                "from ({from}) is after to ({to})"
            )));
        }
        let days = (to - from).num_days() + 1;
        if days > MAX_REPORT_DAYS {
            return Err(Error::InvalidDateRange(format!(
                "{from} to {to} is {days} days; ask for at most {MAX_REPORT_DAYS}"
            )));
        }
        Ok(DayRange { from, to })
    }
}

pub fn month_start(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}

pub fn days_in_month(day: NaiveDate) -> u32 {
    let start = month_start(day);
    let next = start
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(start);
    u32::try_from((next - start).num_days()).unwrap_or(30)
}

/// What the catalog holds for a tenant over a range of days.
#[derive(Debug, Clone, Default)]
pub struct UsageRows {
    /// Every stored quantity, `active_users` of each day included.
    pub counts: Vec<UsageCount>,
    /// Distinct users over the whole range.
    pub distinct_users: u64,
}

/// One day of a [`UsageReport`].
#[derive(Debug, Clone, Serialize)]
pub struct DayUsage {
    pub day: NaiveDate,
    pub metrics: BTreeMap<Metric, u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub requests_by_label: BTreeMap<String, u64>,
}

/// A tenant's usage over a range of days.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    pub tenant: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// The days with any usage, in order.
    pub days: Vec<DayUsage>,
    /// Counts summed over the range; `storage_bytes` is the latest day's sample and
    /// `active_users` the distinct users of the whole range.
    pub totals: BTreeMap<Metric, u64>,
    pub requests_by_label: BTreeMap<String, u64>,
    #[serde(skip)]
    pub rows: Vec<UsageCount>,
}

impl UsageReport {
    pub fn new(tenant: String, range: DayRange, mut rows: UsageRows) -> UsageReport {
        rows.counts
            .sort_by(|a, b| (a.day, a.metric, &a.label).cmp(&(b.day, b.metric, &b.label)));
        let mut days: BTreeMap<NaiveDate, DayUsage> = BTreeMap::new();
        let mut totals: BTreeMap<Metric, u64> = BTreeMap::new();
        let mut by_label: BTreeMap<String, u64> = BTreeMap::new();
        for c in &rows.counts {
            let day = days.entry(c.day).or_insert_with(|| DayUsage {
                day: c.day,
                metrics: BTreeMap::new(),
                requests_by_label: BTreeMap::new(),
            });
            if c.label.is_empty() {
                day.metrics.insert(c.metric, c.value);
                let total = totals.entry(c.metric).or_default();
                *total = match c.metric {
                    // Rows come in day order: the last one is the latest sample.
                    Metric::StorageBytes => c.value,
                    _ => total.saturating_add(c.value),
                };
            } else {
                day.requests_by_label.insert(c.label.clone(), c.value);
                *by_label.entry(c.label.clone()).or_default() += c.value;
            }
        }
        if rows.distinct_users > 0 {
            totals.insert(Metric::ActiveUsers, rows.distinct_users);
        }
        UsageReport {
            tenant,
            from: range.from,
            to: range.to,
            days: days.into_values().collect(),
            totals,
            requests_by_label: by_label,
            rows: rows.counts,
        }
    }

    /// `day,metric,label,value`: a header, then one line per day, metric and label.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("day,metric,label,value\n");
        for c in &self.rows {
            out.push_str(&format!(
                "{},{},{},{}\n",
                c.day,
                c.metric.as_str(),
                csv_field(&c.label),
                c.value
            ));
        }
        out
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// One priced quantity of a [`CostEstimate`].
#[derive(Debug, Clone, Serialize)]
pub struct CostLine {
    pub metric: Metric,
    /// Month to date; `storage_bytes`: the month's latest sample; `active_users`: distinct
    /// users of the month.
    pub quantity: u64,
    /// Per unit; `storage_bytes`: per GiB.
    pub unit_price: Money,
    pub amount: Money,
    /// Whether the projection scales it to the whole month (counts do; storage and active
    /// users are levels, held as they are).
    pub scaled: bool,
}

/// What a tenant's month costs so far and is heading for, under its plan's price model.
#[derive(Debug, Clone, Serialize)]
pub struct CostEstimate {
    pub tenant: String,
    /// `None`: no plan applies, nothing is priced.
    pub plan: Option<String>,
    pub currency: String,
    /// `YYYY-MM`.
    pub month: String,
    pub as_of: NaiveDate,
    pub days_in_month: u32,
    /// Days of the month counted as elapsed: the current day counts as a whole day.
    pub elapsed_days: u32,
    pub base: Money,
    pub lines: Vec<CostLine>,
    /// `base` plus every line.
    pub mtd: Money,
    /// `base` plus the scaled lines × days_in_month / elapsed_days plus the other lines.
    pub projection: Money,
    /// The tenant's own budget, else its plan's.
    pub budget: Option<Money>,
    /// `mtd` as a percentage of `budget`, two decimals.
    pub percent_of_budget: Option<f64>,
    pub projected_percent_of_budget: Option<f64>,
    /// Alerts raised this month.
    pub alerts: Vec<BudgetAlert>,
}

/// A price for `quantity` of `metric`: per unit, or per GiB for storage (rounded to the
/// nearest millionth).
fn amount(metric: Metric, price: Money, quantity: u64) -> Money {
    if metric == Metric::StorageBytes {
        let micros = (i128::from(price.micros()) * i128::from(quantity) + GIB / 2) / GIB;
        Money(i64::try_from(micros).unwrap_or(i64::MAX))
    } else {
        price.times(quantity)
    }
}

fn percent(part: Money, whole: Money) -> f64 {
    (part.as_f64() / whole.as_f64() * 10_000.0).round() / 100.0
}

/// The month-to-date cost of `quantities` (the month's usage up to and including `today`)
/// under `price`, and its projection to the month's end.
pub fn estimate(
    tenant: String,
    plan: Option<String>,
    price: &PriceModel,
    budget: Option<Money>,
    today: NaiveDate,
    quantities: &BTreeMap<Metric, u64>,
) -> CostEstimate {
    let days = days_in_month(today);
    let elapsed = today.day();
    let mut lines = Vec::new();
    let (mut scaled, mut held) = (0i128, 0i128);
    for (metric, unit_price) in &price.per_unit {
        let quantity = quantities.get(metric).copied().unwrap_or(0);
        let amount = amount(*metric, *unit_price, quantity);
        let is_scaled = !matches!(metric, Metric::StorageBytes | Metric::ActiveUsers);
        if is_scaled {
            scaled += i128::from(amount.micros());
        } else {
            held += i128::from(amount.micros());
        }
        lines.push(CostLine {
            metric: *metric,
            quantity,
            unit_price: *unit_price,
            amount,
            scaled: is_scaled,
        });
    }
    let base = i128::from(price.base.micros());
    let clamp = |v: i128| Money(i64::try_from(v).unwrap_or(i64::MAX));
    let mtd = clamp(base + scaled + held);
    let projection = clamp(base + scaled * i128::from(days) / i128::from(elapsed.max(1)) + held);
    let budget = budget.filter(|b| *b > Money::ZERO);
    CostEstimate {
        tenant,
        plan,
        currency: price.currency.clone(),
        month: month_key(today),
        as_of: today,
        days_in_month: days,
        elapsed_days: elapsed,
        base: price.base,
        lines,
        mtd,
        projection,
        budget,
        percent_of_budget: budget.map(|b| percent(mtd, b)),
        projected_percent_of_budget: budget.map(|b| percent(projection, b)),
        alerts: Vec::new(),
    }
}

/// `YYYY-MM`.
pub fn month_key(day: NaiveDate) -> String {
    format!("{:04}-{:02}", day.year(), day.month())
}

/// The thresholds `cost` has reached of `budget`.
pub fn thresholds_reached(cost: Money, budget: Money) -> Vec<u32> {
    if budget <= Money::ZERO {
        return Vec::new();
    }
    BUDGET_THRESHOLDS
        .into_iter()
        .filter(|t| i128::from(cost.micros()) * 100 >= i128::from(budget.micros()) * i128::from(*t))
        .collect()
}

/// A budget threshold a tenant's month-to-date cost crossed: raised once per tenant, month
/// and threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetAlert {
    pub tenant_id: TenantId,
    /// `YYYY-MM`.
    pub month: String,
    /// Percent of the budget.
    pub threshold: u32,
    /// The month-to-date cost when it was raised.
    pub cost: Money,
    pub budget: Money,
    pub raised_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn money(s: &str) -> Money {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_default_to_the_month_and_refuse_bad_dates() {
        let today = d("2026-03-17");
        let r = DayRange::parse(None, None, today).unwrap();
        assert_eq!((r.from, r.to), (d("2026-03-01"), today));
        let r = DayRange::parse(None, Some("2026-02-10"), today).unwrap();
        assert_eq!((r.from, r.to), (d("2026-02-01"), d("2026-02-10")));
        let r = DayRange::parse(Some("2025-03-17"), Some("2026-03-17"), today).unwrap();
        assert_eq!((r.to - r.from).num_days() + 1, 366);
        for (from, to) in [
            (Some("2026-13-01"), None),
            (Some("yesterday"), None),
            (None, Some("2026-02-30")),
            (Some("2026-03-18"), Some("2026-03-17")),
            (Some("2025-03-16"), Some("2026-03-17")),
            (Some("2026-04-01"), None),
        ] {
            let e = DayRange::parse(from, to, today).unwrap_err();
            assert!(matches!(e, Error::InvalidDateRange(_)), "{from:?} {to:?}");
        }
    }

    #[test]
    fn cost_and_projection_follow_the_price_model() {
        let price = PriceModel {
            currency: "EUR".into(),
            base: money("10.00"),
            per_unit: BTreeMap::from([
                (Metric::Requests, money("0.001")),
                (Metric::RowsInserted, money("0.0001")),
                (Metric::StorageBytes, money("0.50")),
                (Metric::ActiveUsers, money("2.00")),
            ]),
        };
        let q = BTreeMap::from([
            (Metric::Requests, 30_000),
            (Metric::RowsInserted, 5_000),
            (Metric::StorageBytes, 3 << 30),
            (Metric::ActiveUsers, 4),
            (Metric::Reads, 99_999),
        ]);
        // April has 30 days; on the 10th, ten days (today included) have elapsed.
        let e = estimate(
            "acme".into(),
            Some("pro".into()),
            &price,
            Some(money("100")),
            d("2026-04-10"),
            &q,
        );
        assert_eq!(e.month, "2026-04");
        assert_eq!((e.days_in_month, e.elapsed_days), (30, 10));
        // 10 + 30 (requests) + 0.5 (rows) + 1.5 (3 GiB) + 8 (4 users) = 50
        assert_eq!(e.mtd, money("50"));
        // 10 + (30 + 0.5) × 30 / 10 + 1.5 + 8 = 111
        assert_eq!(e.projection, money("111"));
        assert_eq!(e.percent_of_budget, Some(50.0));
        assert_eq!(e.projected_percent_of_budget, Some(111.0));
        assert_eq!(e.lines.len(), 4, "unpriced metrics are no lines");

        // The first day of a month projects its one day over the month; February 2028 has 29.
        let e = estimate("a".into(), None, &price, None, d("2028-02-01"), &q);
        assert_eq!(e.days_in_month, 29);
        assert_eq!(
            e.projection,
            money("10") + money("30.5").times(29) + money("9.5")
        );
        assert_eq!(e.percent_of_budget, None);
        // On the last day the projection is the month to date.
        let e = estimate("a".into(), None, &price, None, d("2026-12-31"), &q);
        assert_eq!(e.projection, e.mtd);
        // Half a GiB at 0.50 per GiB, rounded to the millionth.
        assert_eq!(
            amount(Metric::StorageBytes, money("0.50"), 1 << 29),
            money("0.25")
        );
        assert_eq!(amount(Metric::StorageBytes, money("1"), 1), Money(0));
    }

    impl std::ops::Add for Money {
        type Output = Money;
        fn add(self, o: Money) -> Money {
            Money(self.0 + o.0)
        }
    }

    #[test]
    fn thresholds_are_reached_at_their_percentage() {
        let b = money("200");
        assert!(thresholds_reached(money("99.99"), b).is_empty());
        assert_eq!(thresholds_reached(money("100"), b), vec![50]);
        assert_eq!(thresholds_reached(money("160"), b), vec![50, 80]);
        assert_eq!(thresholds_reached(money("200"), b), vec![50, 80, 100]);
        assert_eq!(thresholds_reached(money("900"), b), vec![50, 80, 100]);
        assert!(thresholds_reached(money("900"), Money::ZERO).is_empty());
    }

    #[test]
    fn the_meter_hands_over_everything_and_takes_back_a_failed_batch() {
        let meter = Meter::default();
        let (t, day) = (TenantId::generate(), d("2026-03-17"));
        let user = UserId::generate();
        for _ in 0..3 {
            meter.request(t, day, Some("store:T01"), Some(user));
        }
        meter.request(t, day, None, None);
        meter.add(t, day, Metric::RowsInserted, 5);
        meter.add(t, day, Metric::ActiveUsers, 5);
        let batch = meter.take();
        assert!(meter.take().is_empty());
        let value = |m: Metric, label: &str| {
            batch
                .counts
                .iter()
                .find(|c| c.metric == m && c.label == label)
                .map(|c| c.value)
        };
        assert_eq!(value(Metric::Requests, ""), Some(4));
        assert_eq!(value(Metric::Requests, "store:T01"), Some(3));
        assert_eq!(value(Metric::RowsInserted, ""), Some(5));
        assert_eq!(value(Metric::ActiveUsers, ""), None);
        assert_eq!(batch.active_users, vec![(t, day, user)]);
        assert_eq!(meter.take_written(), HashSet::from([t]));

        meter.request(t, day, None, None);
        meter.restore(batch);
        let again = meter.take();
        let requests = again
            .counts
            .iter()
            .find(|c| c.metric == Metric::Requests && c.label.is_empty())
            .unwrap();
        assert_eq!(requests.value, 5);
        assert_eq!(again.active_users.len(), 1);
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_day_metric_and_label() {
        let t = TenantId::generate();
        let c = |day: &str, metric, label: &str, value| UsageCount {
            tenant: t,
            day: d(day),
            metric,
            label: label.into(),
            value,
        };
        let rows = UsageRows {
            counts: vec![
                c("2026-03-02", Metric::Requests, "", 7),
                c("2026-03-01", Metric::StorageBytes, "", 100),
                c("2026-03-02", Metric::StorageBytes, "", 300),
                c("2026-03-01", Metric::Requests, "store,\"x\"", 2),
                c("2026-03-01", Metric::Requests, "", 3),
            ],
            distinct_users: 0,
        };
        let range = DayRange {
            from: d("2026-03-01"),
            to: d("2026-03-31"),
        };
        let report = UsageReport::new("acme".into(), range, rows);
        assert_eq!(
            report.to_csv(),
            "day,metric,label,value\n\
             2026-03-01,requests,,3\n\
             2026-03-01,requests,\"store,\"\"x\"\"\",2\n\
             2026-03-01,storage_bytes,,100\n\
             2026-03-02,requests,,7\n\
             2026-03-02,storage_bytes,,300\n"
        );
        assert_eq!(report.totals[&Metric::Requests], 10);
        assert_eq!(
            report.totals[&Metric::StorageBytes],
            300,
            "the latest sample"
        );
        assert_eq!(report.requests_by_label["store,\"x\""], 2);
        assert_eq!(report.days.len(), 2);
    }
}
