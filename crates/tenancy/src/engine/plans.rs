//! Plans on the engine: where a tenant on a plan is placed, what it may use and do, changing
//! its plan (journaled), and suspending the tenants whose trial or subscription ended.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::*;
use crate::catalog::PlanState;
use crate::plans::{Effective, LimitKind, Money, PlanOverrides, Plans};

/// Where the job that suspends lapsed tenants is held: one process of a fleet runs it.
pub const LAPSE_JOB: &str = "job:lapse";

/// A change to a tenant's plan. Absent fields keep what the tenant has; `limits` and
/// `features` are merged into its overrides (`reset_overrides` first drops them all).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanChange {
    #[serde(default)]
    pub plan: Option<String>,
    /// Limit name → maximum (`null`: unlimited).
    #[serde(default)]
    pub limits: BTreeMap<String, Option<u64>>,
    #[serde(default)]
    pub features: BTreeMap<String, bool>,
    /// `Some(None)`: the plan's budget again.
    #[serde(default, deserialize_with = "present")]
    pub budget: Option<Option<Money>>,
    #[serde(default, deserialize_with = "present")]
    pub trial_ends_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "present")]
    pub subscription_ends_at: Option<Option<DateTime<Utc>>>,
    #[serde(default)]
    pub reset_overrides: bool,
}

/// A field that is present, even as `null` (which clears it).
fn present<'de, T, D>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl PlanChange {
    /// Whether it changes only what a tenant's owner may change: the plan and the budget.
    pub fn owner_may_make(&self) -> bool {
        self.limits.is_empty()
            && self.features.is_empty()
            && self.trial_ends_at.is_none()
            && self.subscription_ends_at.is_none()
            && !self.reset_overrides
    }

    pub fn is_empty(&self) -> bool {
        self.owner_may_make() && self.plan.is_none() && self.budget.is_none()
    }
}

/// The outcome of [`Engine::change_plan`].
#[derive(Debug, Clone, Serialize)]
pub struct PlanChanged {
    pub tenant: Tenant,
    /// The plan places its tenants elsewhere than this tenant is: a move is due (the
    /// change does not move it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub move_due: Option<MoveDue>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MoveDue {
    pub store: String,
    pub mode: Mode,
}

/// One limit of a tenant with what it uses of it now.
#[derive(Debug, Clone, Serialize)]
pub struct LimitUse {
    pub limit: String,
    /// `None`: unlimited.
    pub max: Option<u64>,
    /// `None`: not a quantity the tenant holds (rates, tenants per owner), or not measured
    /// yet (storage before its first sample).
    pub current: Option<u64>,
}

impl Inner {
    /// The plan, store and mode of a new tenant: what `place` asks, else the plan's
    /// (`place.plan`, else the default plan), else the configured defaults.
    pub(crate) fn place_on_plan(
        &self,
        place: &PlaceOptions,
    ) -> Result<(Option<String>, String, Mode)> {
        let plans = &self.config.plans;
        let plan = match place.plan.as_deref().or(plans.default_plan()) {
            Some(name) => Some(plans.require(name)?),
            None => None,
        };
        let store = place
            .store
            .clone()
            .or_else(|| plan.and_then(|p| p.store.clone()))
            .unwrap_or_else(|| self.config.default_store.clone());
        let mode = self.mode_for(&store, place.mode.or(plan.and_then(|p| p.mode)))?;
        Ok((plan.map(|p| p.name.clone()), store, mode))
    }

    pub(crate) fn effective(&self, tenant: &Tenant) -> Option<Arc<Effective>> {
        self.config
            .plans
            .effective(tenant.plan.as_deref(), &tenant.plan_overrides)
    }
}

impl Engine {
    pub fn plans(&self) -> &Plans {
        &self.inner.config.plans
    }

    /// The tenant's plan with its overrides applied; `None` when no plan applies.
    pub fn effective_plan(&self, tenant: &Tenant) -> Option<Arc<Effective>> {
        self.inner.effective(tenant)
    }

    /// Whether a feature flag is on for the tenant (off when no plan sets it).
    pub fn feature(&self, tenant: &Tenant, flag: &str) -> bool {
        self.inner
            .effective(tenant)
            .is_some_and(|e| e.feature(flag))
    }

    /// The maximum of a built-in limit for the tenant (`None`: unlimited).
    pub(crate) async fn limit_of(&self, tenant: TenantId, kind: LimitKind) -> Result<Option<u64>> {
        if self.plans().is_empty() {
            return Ok(None);
        }
        Ok(self
            .tenant_by_id(tenant)
            .await?
            .and_then(|t| self.inner.effective(&t))
            .and_then(|e| e.limit(kind)))
    }

    /// Changes a tenant's plan, overrides or dates, journaled as `plan.update`. Changing
    /// the plan clears a suspension the trial or subscription end caused only if the
    /// caller resumes the tenant; a plan that places tenants elsewhere answers `move_due`.
    pub async fn change_plan(&self, tenant: &Tenant, change: PlanChange) -> Result<PlanChanged> {
        if change.is_empty() {
            return Err(Error::InvalidInput(
                "nothing to change: give plan, limits, features, budget, trial_ends_at, \
                 subscription_ends_at or reset_overrides"
                    .into(),
            ));
        }
        let plans = self.plans();
        if plans.is_empty() {
            return Err(Error::InvalidInput("no plans are configured".into()));
        }
        if let Some(p) = &change.plan {
            plans.require(p)?;
        }
        let current =
            self.catalog()
                .tenant(tenant.id)
                .await?
                .ok_or_else(|| Error::TenantNotFound {
                    slug: tenant.slug.to_string(),
                })?;
        let plan = change.plan.clone().or(current.plan.clone());
        let mut overrides = if change.reset_overrides {
            PlanOverrides::default()
        } else {
            current.plan_overrides.clone()
        };
        overrides.limits.extend(change.limits.clone());
        overrides
            .features
            .extend(change.features.iter().map(|(k, v)| (k.clone(), *v)));
        if let Some(budget) = change.budget {
            overrides.budget = budget;
        }
        plans.check_overrides(plan.as_deref(), &overrides)?;
        // A trial ends the plan it was on: a new plan ends the trial, unless the same
        // change sets a new one.
        let plan_changed = change.plan.is_some() && change.plan != current.plan;
        let trial_ends_at = match change.trial_ends_at {
            Some(t) => t,
            None if plan_changed => None,
            None => current.trial_ends_at,
        };
        let subscription_ends_at = change
            .subscription_ends_at
            .unwrap_or(current.subscription_ends_at);
        let detail = describe(&current, &change);
        let updated = self
            .catalog()
            .set_plan(
                tenant.id,
                &PlanState {
                    plan: plan.clone(),
                    overrides,
                    trial_ends_at,
                    subscription_ends_at,
                    detail,
                },
            )
            .await?;
        let move_due = plan.as_deref().and_then(|p| plans.get(p)).and_then(|p| {
            let store = p.store.clone().unwrap_or(updated.placement.store.clone());
            let mode = p.mode.unwrap_or(updated.placement.mode);
            (store != updated.placement.store || mode != updated.placement.mode)
                .then_some(MoveDue { store, mode })
        });
        Ok(PlanChanged {
            tenant: updated,
            move_due,
        })
    }

    /// Each limit of the tenant's plan with what the tenant uses of it now.
    pub async fn limit_usage(&self, tenant: &Tenant) -> Result<Vec<LimitUse>> {
        let Some(effective) = self.inner.effective(tenant) else {
            return Ok(Vec::new());
        };
        let counts = self.catalog().quota_counts(tenant.id).await?;
        let mut out = Vec::new();
        for (name, max) in &effective.limits {
            let current = match name.as_str() {
                "members" => Some(counts.members),
                "api_keys" => Some(counts.api_keys),
                // The latest sample in memory: the request path reads no catalog for it.
                "storage_bytes" => self.storage_sample(tenant.id),
                _ => match effective.rows.iter().find(|(r, _)| &r.name == name) {
                    Some((row, _)) => Some(self.count_limited_rows(tenant, row).await?),
                    None => None,
                },
            };
            out.push(LimitUse {
                limit: name.clone(),
                max: *max,
                current,
            });
        }
        Ok(out)
    }

    /// Suspends every active tenant whose trial or subscription ended, with the reason
    /// recorded on it; the tenants suspended.
    pub async fn suspend_lapsed(&self) -> Result<Vec<Tenant>> {
        let now = Utc::now();
        let mut suspended = Vec::new();
        for tenant in self.catalog().lapsed_tenants(now).await? {
            let reason = lapse_reason(&tenant, now);
            match self
                .catalog()
                .transition(Transition {
                    id: tenant.id,
                    from: &[Active],
                    to: Suspended,
                    expect_owner: None,
                    new_owner: None,
                    error: Some(reason),
                    schema_version: None,
                    event: "suspend.lapsed",
                })
                .await
            {
                Ok(t) => suspended.push(t),
                // Changed meanwhile (resumed, deleted, suspended by hand): its own state
                // stands.
                Err(Error::InvalidTransition { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(suspended)
    }

    /// Runs [`Engine::suspend_lapsed`] every `every` while this process holds the job's
    /// lease (a catalog lock held while the holder lives: one process of a fleet runs it,
    /// another takes over when it dies). Stops with the engine.
    pub fn spawn_lapse_job(&self, every: std::time::Duration) {
        self.spawn_leased(LAPSE_JOB, every, |engine, holding| async move {
            if !holding {
                return;
            }
            match engine.suspend_lapsed().await {
                Ok(done) => {
                    for t in done {
                        tracing::info!(tenant = %t.slug, reason = ?t.error, "suspended: trial or subscription ended");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "suspending lapsed tenants failed"),
            }
        });
    }
}

fn lapse_reason(tenant: &Tenant, now: DateTime<Utc>) -> String {
    match (tenant.trial_ends_at, tenant.subscription_ends_at) {
        (Some(t), _) if t <= now => format!("trial ended at {}", t.to_rfc3339()),
        (_, Some(s)) => format!("subscription ended at {}", s.to_rfc3339()),
        _ => "subscription ended".into(),
    }
}

/// The journal's words for a plan change.
fn describe(current: &Tenant, change: &PlanChange) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &change.plan {
        parts.push(format!(
            "plan {} -> {p}",
            current.plan.as_deref().unwrap_or("(default)")
        ));
    }
    if change.reset_overrides {
        parts.push("overrides reset".into());
    }
    for (k, v) in &change.limits {
        parts.push(match v {
            Some(v) => format!("limit {k}={v}"),
            None => format!("limit {k}=unlimited"),
        });
    }
    for (k, v) in &change.features {
        parts.push(format!("feature {k}={}", if *v { "on" } else { "off" }));
    }
    if let Some(b) = &change.budget {
        parts.push(match b {
            Some(b) => format!("budget {b}"),
            None => "budget from plan".into(),
        });
    }
    for (name, at) in [
        ("trial_ends_at", &change.trial_ends_at),
        ("subscription_ends_at", &change.subscription_ends_at),
    ] {
        if let Some(at) = at {
            parts.push(match at {
                Some(t) => format!("{name} {}", t.to_rfc3339()),
                None => format!("{name} cleared"),
            });
        }
    }
    parts.join("; ")
}
