//! The JSON shapes of users, keys and plans as the API shows them (SPEC §4, §7).

use crate::auth::cache::Snapshot;
use crate::db::{self, api_keys::KeyRow, credits::CreditEntry, plans::Plan, users::UserRow};
use crate::money::Usd;
use serde::Serialize;
use std::sync::atomic::Ordering;

/// A user as `/auth/me` and `/auth/register` show it.
#[derive(Serialize)]
pub struct UserView {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub role: String,
    pub plan: String,
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> Self {
        UserView {
            id: u.id,
            username: u.username.clone(),
            email: u.email.clone(),
            role: u.role.clone(),
            plan: u.plan.clone(),
        }
    }
}

/// A user as the admin routes show it.
#[derive(Serialize)]
pub struct AdminUserView {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub role: String,
    pub plan: String,
    pub disabled: bool,
    pub created_at: String,
}

impl From<&UserRow> for AdminUserView {
    fn from(u: &UserRow) -> Self {
        AdminUserView {
            id: u.id,
            username: u.username.clone(),
            email: u.email.clone(),
            role: u.role.clone(),
            plan: u.plan.clone(),
            disabled: u.disabled,
            created_at: u.created_at.clone(),
        }
    }
}

/// A key without its secret.
#[derive(Serialize)]
pub struct KeyView {
    pub id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i64>,
    pub name: String,
    pub description: Option<String>,
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked: bool,
    pub allowed_models: Option<Vec<String>>,
    pub monthly_token_limit: Option<i64>,
    /// Dollars per month; null: only the plan's limits apply.
    pub monthly_usd_limit: Option<Usd>,
}

impl KeyView {
    /// The key as stored, with a last use seen in memory but not yet written.
    pub fn new(k: &KeyRow, snap: &Snapshot, with_user: bool) -> Self {
        let mut last_used_at = k.last_used_at.clone();
        let mut hash = [0u8; 32];
        let live = hex::decode_to_slice(&k.key_hash, &mut hash)
            .ok()
            .and_then(|_| snap.keys.get(&hash));
        if let Some(live) = live {
            let t = live.last_used.load(Ordering::Relaxed);
            let stored = last_used_at
                .as_deref()
                .and_then(db::parse_ts)
                .map(|t| t.timestamp())
                .unwrap_or(0);
            if t > stored {
                last_used_at = chrono::DateTime::from_timestamp(t, 0).map(db::ts);
            }
        }
        KeyView {
            id: k.id,
            user_id: with_user.then_some(k.user_id),
            name: k.name.clone(),
            description: k.description.clone(),
            prefix: k.prefix.clone(),
            created_at: k.created_at.clone(),
            last_used_at,
            expires_at: k.expires_at.clone(),
            revoked: k.revoked,
            allowed_models: k.allowed_models.clone(),
            monthly_token_limit: k.monthly_token_limit,
            monthly_usd_limit: k.monthly_usd_limit,
        }
    }
}

/// The answer to `POST /api/keys`: the only time the secret is shown.
#[derive(Serialize)]
pub struct CreatedKeyView {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub api_key: String,
    pub prefix: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub allowed_models: Option<Vec<String>>,
    pub monthly_token_limit: Option<i64>,
    pub monthly_usd_limit: Option<Usd>,
}

pub type PlanView = Plan;

/// A page of a user's credit ledger with their balance: the answer of
/// `GET /admin/users/{id}/credits` and `GET /subscriptions/credits`.
#[derive(Serialize)]
pub struct CreditList {
    pub data: Vec<CreditEntry>,
    pub next_before: Option<i64>,
    /// The credit left, once every written charge is counted.
    pub credit_usd: Usd,
}

/// A new credit entry with the balance after it (`POST /admin/users/{id}/credits`).
#[derive(Serialize)]
pub struct AddedCredit {
    pub id: i64,
    pub user_id: i64,
    pub amount_usd: Usd,
    pub note: String,
    pub created_by: Option<String>,
    pub created_at: String,
    pub credit_usd: Usd,
}

impl AddedCredit {
    pub fn new(e: CreditEntry, balance: i64) -> Self {
        AddedCredit {
            id: e.id,
            user_id: e.user_id,
            amount_usd: e.amount_usd,
            note: e.note,
            created_by: e.created_by,
            created_at: e.created_at,
            credit_usd: Usd(balance),
        }
    }
}

#[derive(Serialize)]
pub struct DataList<T: Serialize> {
    pub data: Vec<T>,
}

/// One page of a list, newest first (SPEC §13): `next_before` is the id to
/// ask for the next page with, `null` on the last one.
#[derive(Serialize)]
pub struct Page<T: Serialize> {
    pub data: Vec<T>,
    pub next_before: Option<i64>,
}

/// `?limit=` and `?before=` of a paged list, checked.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub limit: i64,
    pub before: Option<i64>,
}

impl Paging {
    /// Reads `limit` (default `default`, 1 to `max`) and `before` (an id).
    pub fn parse(
        limit: Option<&str>,
        before: Option<&str>,
        default: i64,
        max: i64,
    ) -> crate::error::ApiResult<Paging> {
        use crate::error::ApiError;
        let limit = match limit.filter(|s| !s.is_empty()) {
            None => default,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid_field(
                        "limit",
                        format!("limit is a number from 1 to {max}."),
                    ))
                }
            },
        };
        let before = match before.filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(s.parse::<i64>().map_err(|_| {
                ApiError::invalid_field("before", "before is an id from the previous page.")
            })?),
        };
        Ok(Paging { limit, before })
    }

    /// How many rows to ask the store for: one more than a page, to know
    /// whether another page follows.
    pub fn ask(&self) -> i64 {
        self.limit + 1
    }

    /// Cuts `rows` (asked with [`Paging::ask`]) to a page; `id` names a row.
    pub fn page<R, T: Serialize>(
        &self,
        mut rows: Vec<R>,
        id: impl Fn(&R) -> i64,
        view: impl FnMut(R) -> T,
    ) -> Page<T> {
        let next_before = if rows.len() as i64 > self.limit {
            rows.truncate(self.limit as usize);
            rows.last().map(&id)
        } else {
            None
        };
        Page {
            data: rows.into_iter().map(view).collect(),
            next_before,
        }
    }
}
