//! Prepaid credit (SPEC §12): adding entries to a user's credit ledger and
//! reading it, with the checks the admin API (`/admin/users/{id}/credits`)
//! and the CLI (`tollgate credits …`) share.

use crate::db::credits::{CreditEntry, CreditRefused, NewCredit};
use crate::db::{users::UserRow, Store};
use crate::error::{ApiError, ApiResult};
use crate::money::{format_usd, MAX_MICROS};

/// The longest note an entry may carry, in characters.
pub const MAX_NOTE_CHARS: usize = 500;

/// Dollars for a message, to the cent or finer: `$12.50`, `-$3.00`,
/// `$0.000001`.
pub fn dollars(micros: i64) -> String {
    let mut text = format_usd(micros.abs());
    match text.split_once('.') {
        None => text.push_str(".00"),
        Some((_, frac)) if frac.len() == 1 => text.push('0'),
        Some(_) => {}
    }
    let sign = if micros < 0 { "-" } else { "" };
    format!("{sign}${text}")
}

/// Adds `amount_micros` (positive: a top-up, negative: a deduction) to the
/// credit of user `user_id`, with `note`, as `created_by` (an admin's
/// username; `None`: the CLI). Returns the entry and the new balance.
pub async fn add(
    store: &Store,
    user_id: i64,
    amount_micros: i64,
    note: &str,
    created_by: Option<String>,
    now: String,
) -> ApiResult<(CreditEntry, i64)> {
    if amount_micros == 0 {
        return Err(ApiError::invalid_field(
            "amount_usd",
            "The amount may not be 0: a positive amount tops the credit up, a negative one deducts.",
        ));
    }
    if amount_micros.unsigned_abs() > MAX_MICROS as u64 {
        return Err(ApiError::invalid_field(
            "amount_usd",
            format!("The amount is at most {} either way.", dollars(MAX_MICROS)),
        ));
    }
    let note = note.trim();
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(ApiError::invalid_field(
            "note",
            format!("A note is at most {MAX_NOTE_CHARS} characters."),
        ));
    }
    let new = NewCredit {
        user_id,
        amount_micros,
        note: note.to_owned(),
        created_by,
    };
    match store.add_credit(new, now).await? {
        Ok(done) => Ok(done),
        Err(CreditRefused::UnknownUser) => Err(no_user(user_id)),
        Err(CreditRefused::Overdrawn { balance }) => Err(ApiError::invalid_field(
            "amount_usd",
            format!(
                "The credit is {}; deducting {} would take it below zero. Deduct at most {}.",
                dollars(balance),
                dollars(-amount_micros),
                dollars(balance.max(0))
            ),
        )),
        Err(CreditRefused::TooLarge { balance }) => Err(ApiError::invalid_field(
            "amount_usd",
            format!(
                "The credit is {}; adding {} would take it past {}, the most tollgate keeps.",
                dollars(balance),
                dollars(amount_micros),
                dollars(MAX_MICROS)
            ),
        )),
    }
}

/// A page of a user's ledger (newest first) and their balance; 404 when the
/// user does not exist.
pub async fn ledger(
    store: &Store,
    user_id: i64,
    before: Option<i64>,
    limit: i64,
) -> ApiResult<(Vec<CreditEntry>, i64)> {
    if store.user_by_id(user_id).await?.is_none() {
        return Err(no_user(user_id));
    }
    let entries = store.list_credits(user_id, before, limit).await?;
    let balance = store.credit_balance(user_id).await?;
    Ok((entries, balance))
}

/// The user a command line names: by username, else by id.
pub async fn find_user(store: &Store, who: &str) -> ApiResult<UserRow> {
    if let Some(u) = store.user_by_username(who.to_owned()).await? {
        return Ok(u);
    }
    if let Ok(id) = who.parse::<i64>() {
        if let Some(u) = store.user_by_id(id).await? {
            return Ok(u);
        }
    }
    Err(ApiError::not_found(format!(
        "There is no user named {who:?} (nor with that id); `tollgate user list` shows them."
    )))
}

fn no_user(id: i64) -> ApiError {
    ApiError::not_found(format!("There is no user with id {id}."))
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_show_cents_or_finer() {
        use super::dollars;
        assert_eq!(dollars(22_500_000), "$22.50");
        assert_eq!(dollars(-3_000_000), "-$3.00");
        assert_eq!(dollars(1), "$0.000001");
        assert_eq!(dollars(0), "$0.00");
        assert_eq!(dollars(1_250_000), "$1.25");
    }
}
