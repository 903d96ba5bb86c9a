//! Accounts, plans and keys: first-start bootstrap, creating users, minting
//! keys. Functions here run inside one database connection; password hashing
//! happens before, outside it.

use crate::auth::{api_key, password};
use crate::config::Config;
use crate::db::{self, api_keys, plans, settings, users, DbResult};
use crate::error::{ApiError, ApiResult};
use rusqlite::Connection;

/// What the first start did.
#[derive(Debug, Default)]
pub struct Bootstrap {
    /// The generated admin password, to be printed once.
    pub generated_admin_password: Option<String>,
    pub created_admin: bool,
    pub created_plans: usize,
}

/// Seeds an empty database: plans, the `admin` user, the JWT secret. Runs once:
/// later starts change nothing. `admin_hash` is computed by the caller only when
/// `needs_bootstrap` said so.
pub fn needs_bootstrap(conn: &Connection) -> DbResult<bool> {
    Ok(settings::get(conn, "initialized")?.is_none())
}

pub fn bootstrap(
    conn: &mut Connection,
    cfg: &Config,
    admin_hash: &str,
    generated: Option<String>,
    now: &str,
) -> DbResult<Bootstrap> {
    let tx = conn.transaction()?;
    let mut out = Bootstrap::default();
    if settings::get(&tx, "initialized")?.is_some() {
        return Ok(out);
    }
    if plans::list(&tx)?.is_empty() {
        for p in cfg.initial_plans() {
            plans::insert(
                &tx,
                &plans::Plan {
                    name: p.name,
                    monthly_tokens: p.monthly_tokens,
                    requests_per_minute: p.requests_per_minute,
                    price_usd_month: p.price_usd_month,
                    allowed_models: p.allowed_models,
                },
                now,
            )?;
            out.created_plans += 1;
        }
    }
    if users::find_by_username(&tx, "admin")?.is_none() {
        let plan = plans::default_plan(&tx)?.unwrap_or_else(|| "free".into());
        users::insert(
            &tx,
            &users::NewUser {
                username: "admin",
                email: None,
                password_hash: Some(admin_hash),
                role: "admin",
                plan: &plan,
            },
            now,
        )?;
        out.created_admin = true;
        out.generated_admin_password = generated;
    }
    if settings::get(&tx, "jwt_secret")?.is_none() {
        settings::set(&tx, "jwt_secret", &random_secret())?;
    }
    settings::set(&tx, "initialized", now)?;
    tx.commit()?;
    Ok(out)
}

fn random_secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// The JWT signing secret: the configured one, else the one stored in the database.
pub fn jwt_secret(conn: &Connection, cfg: &Config) -> DbResult<String> {
    if !cfg.auth.jwt_secret.is_empty() {
        return Ok(cfg.auth.jwt_secret.expose().to_owned());
    }
    match settings::get(conn, "jwt_secret")? {
        Some(s) => Ok(s),
        None => {
            let s = random_secret();
            settings::set(conn, "jwt_secret", &s)?;
            Ok(s)
        }
    }
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

/// Hashes a password after checking it is long enough (call outside a connection).
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
pub fn create_user(conn: &Connection, a: &NewAccount, now: &str) -> ApiResult<users::UserRow> {
    validate_username(a.username)?;
    validate_role(a.role)?;
    let plan = match a.plan {
        Some(p) => {
            require_plan(conn, p)?;
            p.to_owned()
        }
        None => plans::default_plan(conn)?.ok_or_else(|| ApiError::internal("no plan exists"))?,
    };
    Ok(users::insert(
        conn,
        &users::NewUser {
            username: a.username,
            email: a.email,
            password_hash: a.password_hash,
            role: a.role,
            plan: &plan,
        },
        now,
    )?)
}

pub fn require_plan(conn: &Connection, plan: &str) -> ApiResult<()> {
    if plans::find(conn, plan)?.is_none() {
        return Err(ApiError::invalid_field(
            "plan",
            format!("There is no plan named {plan:?}."),
        ));
    }
    Ok(())
}

/// Settings of a new key.
#[derive(Default)]
pub struct KeySpec {
    pub name: String,
    pub description: Option<String>,
    pub expires_at: Option<String>,
    pub allowed_models: Option<Vec<String>>,
    pub monthly_token_limit: Option<i64>,
}

/// Checks a key's editable fields; normalises `expires_at` to the stored form.
pub fn validate_key_fields(
    name: &str,
    expires_at: Option<&str>,
    allowed: Option<&[String]>,
    limit: Option<i64>,
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
pub fn create_key(
    conn: &Connection,
    user_id: i64,
    spec: &KeySpec,
    now: &str,
) -> ApiResult<(api_keys::KeyRow, String)> {
    let expires = validate_key_fields(
        &spec.name,
        spec.expires_at.as_deref(),
        spec.allowed_models.as_deref(),
        spec.monthly_token_limit,
    )?;
    let (secret, hash, prefix) = api_key::generate();
    let row = api_keys::insert(
        conn,
        &api_keys::NewKey {
            user_id,
            name: spec.name.trim(),
            description: spec.description.as_deref(),
            key_hash: &hex::encode(hash),
            prefix: &prefix,
            expires_at: expires.as_deref(),
            allowed_models: spec.allowed_models.as_deref(),
            monthly_token_limit: spec.monthly_token_limit,
        },
        now,
    )?;
    Ok((row, secret))
}
