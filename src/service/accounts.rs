//! Accounts, plans and keys: first-start bootstrap, creating and editing
//! users, minting keys. The checks and the hashing are here; the writes are
//! the store's, and password hashing happens before them.

use crate::auth::{api_key, password};
use crate::config::Config;
use crate::db::users::{NewUser, UserRow};
use crate::db::{self, api_keys, plans, DbResult, Refused, Seed, Store, UserChanges};
use crate::error::{ApiError, ApiResult};
use crate::money::Usd;

/// What the first start did.
#[derive(Debug, Default)]
pub struct Bootstrap {
    /// The generated admin password, to be printed once.
    pub generated_admin_password: Option<String>,
    pub created_admin: bool,
    pub created_plans: usize,
    /// TOLLGATE_ADMIN_PASSWORD was set, but the database was seeded before:
    /// it counts only on the first start.
    pub admin_password_ignored: bool,
}

/// Seeds an empty database: plans, the `admin` user, the JWT secret. Runs once:
/// later starts change nothing. `admin_hash` is computed by the caller only when
/// [`Store::needs_bootstrap`] said so.
pub async fn bootstrap(
    store: &Store,
    cfg: &Config,
    admin_hash: &str,
    generated: Option<String>,
    now: &str,
) -> DbResult<Bootstrap> {
    let plans = cfg
        .initial_plans()
        .into_iter()
        .map(|p| plans::Plan {
            name: p.name,
            monthly_tokens: p.monthly_tokens,
            monthly_usd: p.monthly_usd,
            requests_per_minute: p.requests_per_minute,
            price_usd_month: p.price_usd_month,
            allowed_models: p.allowed_models,
            pay_as_you_go: p.pay_as_you_go,
        })
        .collect();
    let seeded = store
        .bootstrap(Seed {
            plans,
            admin_hash: admin_hash.to_owned(),
            jwt_secret: random_secret(),
            now: now.to_owned(),
        })
        .await?;
    Ok(Bootstrap {
        generated_admin_password: generated.filter(|_| seeded.created_admin),
        created_admin: seeded.created_admin,
        created_plans: seeded.created_plans,
        admin_password_ignored: false,
    })
}

fn random_secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// The JWT signing secret: the configured one, else the one stored in the database.
pub async fn jwt_secret(store: &Store, cfg: &Config) -> DbResult<String> {
    if !cfg.auth.jwt_secret.is_empty() {
        return Ok(cfg.auth.jwt_secret.expose().to_owned());
    }
    store.jwt_secret(random_secret()).await
}

pub fn validate_username(name: &str) -> ApiResult<()> {
    let ok_char = |c: char| c.is_alphanumeric() || "._-@+".contains(c);
    if name.is_empty() || name.chars().count() > 64 || !name.chars().all(ok_char) {
        return Err(ApiError::invalid_field(
            "username",
            "A username is 1 to 64 letters, digits or the characters . _ - @ +",
        ));
    }
    Ok(())
}

pub fn validate_password(pw: &str) -> ApiResult<()> {
    password::check_strength(pw).map_err(|m| ApiError::invalid_field("password", m))
}

pub fn validate_role(role: &str) -> ApiResult<()> {
    if role != "admin" && role != "user" {
        return Err(ApiError::invalid_field(
            "role",
            "The role is \"admin\" or \"user\".",
        ));
    }
    Ok(())
}

/// Hashes a password after checking it is long enough (CPU-heavy: call it on
/// a blocking thread in a server).
pub fn hash_password(pw: &str) -> ApiResult<String> {
    validate_password(pw)?;
    password::hash(pw).map_err(ApiError::internal)
}

pub struct NewAccount<'a> {
    pub username: &'a str,
    pub password_hash: Option<&'a str>,
    pub email: Option<&'a str>,
    pub role: &'a str,
    pub plan: Option<&'a str>,
}

/// Creates a user; the plan defaults to the default plan; unknown plan: 400.
pub async fn create_user(store: &Store, a: &NewAccount<'_>, now: &str) -> ApiResult<UserRow> {
    validate_username(a.username)?;
    validate_role(a.role)?;
    let new = NewUser {
        username: a.username.to_owned(),
        email: a.email.map(str::to_owned),
        password_hash: a.password_hash.map(str::to_owned),
        role: a.role.to_owned(),
        plan: a.plan.map(str::to_owned),
    };
    match store.create_user(new, now.to_owned()).await? {
        Ok(u) => Ok(u),
        Err(Refused::UnknownPlan) => Err(unknown_plan(a.plan.unwrap_or_default())),
        Err(_) => Err(ApiError::internal("no plan exists")),
    }
}

/// The 400 for a plan name that does not exist.
pub fn unknown_plan(plan: &str) -> ApiError {
    ApiError::invalid_field("plan", format!("There is no plan named {plan:?}."))
}

/// Applies `changes` to user `id`: 404 for an unknown user, 400 for an unknown plan.
pub async fn update_user(store: &Store, id: i64, changes: UserChanges) -> ApiResult<UserRow> {
    let plan = changes.plan.clone();
    match store.update_user(id, changes).await? {
        Ok(u) => Ok(u),
        Err(Refused::UnknownPlan) => Err(unknown_plan(plan.as_deref().unwrap_or_default())),
        Err(_) => Err(ApiError::not_found(format!(
            "There is no user with id {id}."
        ))),
    }
}

/// Settings of a new key.
#[derive(Default)]
pub struct KeySpec {
    pub name: String,
    pub description: Option<String>,
    pub expires_at: Option<String>,
    pub allowed_models: Option<Vec<String>>,
    pub monthly_token_limit: Option<i64>,
    /// Dollars the key may spend per month (SPEC §12).
    pub monthly_usd_limit: Option<Usd>,
}

/// Checks a key's editable fields; normalises `expires_at` to the stored form.
pub fn validate_key_fields(
    name: &str,
    expires_at: Option<&str>,
    allowed: Option<&[String]>,
    limit: Option<i64>,
    usd_limit: Option<Usd>,
) -> ApiResult<Option<String>> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid_field(
            "name",
            "A key needs a name of 1 to 200 characters.",
        ));
    }
    if let Some(a) = allowed {
        crate::glob::Patterns::new(a).map_err(|m| ApiError::invalid_field("allowed_models", m))?;
    }
    if limit.is_some_and(|l| l < 0) {
        return Err(ApiError::invalid_field(
            "monthly_token_limit",
            "The limit is a number of tokens ≥ 0.",
        ));
    }
    if usd_limit.is_some_and(|l| l.0 < 0) {
        return Err(ApiError::invalid_field(
            "monthly_usd_limit",
            "The USD limit is an amount of US dollars ≥ 0.",
        ));
    }
    expires_at
        .map(|e| {
            db::parse_ts(e).map(db::ts).ok_or_else(|| {
                ApiError::invalid_field(
                    "expires_at",
                    "expires_at is an RFC 3339 time such as 2026-12-31T23:59:59Z.",
                )
            })
        })
        .transpose()
}

/// Mints a key for `user_id`; returns the row and the secret (shown once).
pub async fn create_key(
    store: &Store,
    user_id: i64,
    spec: &KeySpec,
    now: &str,
) -> ApiResult<(api_keys::KeyRow, String)> {
    let expires = validate_key_fields(
        &spec.name,
        spec.expires_at.as_deref(),
        spec.allowed_models.as_deref(),
        spec.monthly_token_limit,
        spec.monthly_usd_limit,
    )?;
    let (secret, hash, prefix) = api_key::generate();
    let row = store
        .create_key(
            api_keys::NewKey {
                user_id,
                name: spec.name.trim().to_owned(),
                description: spec.description.clone(),
                key_hash: hex::encode(hash),
                prefix,
                expires_at: expires,
                allowed_models: spec.allowed_models.clone(),
                monthly_token_limit: spec.monthly_token_limit,
                monthly_usd_limit: spec.monthly_usd_limit,
            },
            now.to_owned(),
        )
        .await?;
    Ok((row, secret))
}
