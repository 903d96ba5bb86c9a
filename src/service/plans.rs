//! Plans: creating, editing and deleting them, with the checks the admin API
//! (`/admin/plans`) and the CLI (`tollgate plan …`) share.

use crate::db::{plans::Plan, Store};
use crate::error::{ApiError, ApiResult};
use crate::money::Usd;

/// A new plan as asked for; what is left out gets its default.
#[derive(Debug, Clone)]
pub struct NewPlan {
    pub name: String,
    pub monthly_tokens: i64,
    /// Default `None`: no USD limit.
    pub monthly_usd: Option<Usd>,
    pub requests_per_minute: i64,
    /// Default 0.
    pub price_usd_month: Option<f64>,
    /// Default `["*"]`: every model.
    pub allowed_models: Option<Vec<String>>,
    /// Default false.
    pub pay_as_you_go: Option<bool>,
}

/// The fields of a plan to change; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct PlanChanges {
    pub monthly_tokens: Option<i64>,
    /// `Some(None)` removes the USD limit.
    pub monthly_usd: Option<Option<Usd>>,
    pub requests_per_minute: Option<i64>,
    pub price_usd_month: Option<f64>,
    pub allowed_models: Option<Vec<String>>,
    pub pay_as_you_go: Option<bool>,
}

impl PlanChanges {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.monthly_tokens.is_none()
            && self.monthly_usd.is_none()
            && self.requests_per_minute.is_none()
            && self.price_usd_month.is_none()
            && self.allowed_models.is_none()
            && self.pay_as_you_go.is_none()
    }
}

/// A plan's values make sense; the error names the field (`param`).
pub fn validate(p: &Plan) -> ApiResult<()> {
    if p.name.trim().is_empty() || p.name.len() > 64 || p.name.contains('/') {
        return Err(ApiError::invalid_field(
            "name",
            "A plan name is 1 to 64 characters without '/'.",
        ));
    }
    if p.monthly_tokens < 0 {
        return Err(ApiError::invalid_field(
            "monthly_tokens",
            "monthly_tokens is a number ≥ 0.",
        ));
    }
    if p.monthly_usd.is_some_and(|u| u.0 < 0) {
        return Err(ApiError::invalid_field(
            "monthly_usd",
            "monthly_usd is an amount of US dollars ≥ 0, or null for no USD limit.",
        ));
    }
    if p.requests_per_minute < 1 {
        return Err(ApiError::invalid_field(
            "requests_per_minute",
            "requests_per_minute is at least 1.",
        ));
    }
    if p.price_usd_month < 0.0 || !p.price_usd_month.is_finite() {
        return Err(ApiError::invalid_field(
            "price_usd_month",
            "price_usd_month is a number ≥ 0.",
        ));
    }
    crate::glob::Patterns::new(&p.allowed_models)
        .map_err(|m| ApiError::invalid_field("allowed_models", m))?;
    Ok(())
}

/// Creates a plan; 409 when the name is taken.
pub async fn create(store: &Store, new: NewPlan, now: String) -> ApiResult<Plan> {
    let plan = Plan {
        name: new.name.trim().to_owned(),
        monthly_tokens: new.monthly_tokens,
        monthly_usd: new.monthly_usd,
        requests_per_minute: new.requests_per_minute,
        price_usd_month: new.price_usd_month.unwrap_or(0.0),
        allowed_models: new.allowed_models.unwrap_or_else(|| vec!["*".into()]),
        pay_as_you_go: new.pay_as_you_go.unwrap_or(false),
    };
    validate(&plan)?;
    Ok(store.create_plan(plan, now).await?)
}

/// Applies `changes` to the plan `name`; 404 when there is none.
pub async fn update(store: &Store, name: &str, changes: PlanChanges) -> ApiResult<Plan> {
    let mut plan = store
        .plan_by_name(name.to_owned())
        .await?
        .ok_or_else(|| no_plan(name))?;
    if let Some(v) = changes.monthly_tokens {
        plan.monthly_tokens = v;
    }
    if let Some(v) = changes.monthly_usd {
        plan.monthly_usd = v;
    }
    if let Some(v) = changes.pay_as_you_go {
        plan.pay_as_you_go = v;
    }
    if let Some(v) = changes.requests_per_minute {
        plan.requests_per_minute = v;
    }
    if let Some(v) = changes.price_usd_month {
        plan.price_usd_month = v;
    }
    if let Some(v) = changes.allowed_models {
        plan.allowed_models = v;
    }
    validate(&plan)?;
    if !store.update_plan(plan.clone()).await? {
        return Err(no_plan(name));
    }
    Ok(plan)
}

/// Deletes the plan `name`; 404 when there is none, 409 while a user is on it.
pub async fn delete(store: &Store, name: &str) -> ApiResult<()> {
    if !store.delete_plan(name.to_owned()).await? {
        return Err(no_plan(name));
    }
    Ok(())
}

fn no_plan(name: &str) -> ApiError {
    ApiError::not_found(format!("There is no plan named {name:?}."))
}
