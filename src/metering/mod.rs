//! Metering: the in-memory balance ledger (`ledger`), the per-call guard that
//! reserves before and settles after by construction (`call`), the background
//! usage writer (`writer`), the calls in flight (`calls`), prices (`pricing`), token estimates (`estimate`)
//! and requests-per-minute limits (`limits`).

pub mod call;
pub mod calls;
pub mod estimate;
pub mod ledger;
pub mod limits;
pub mod pricing;
pub mod writer;

use chrono::{DateTime, Datelike, TimeZone, Utc};

/// The usage period (calendar month, UTC) of `t`, as `YYYY-MM`.
pub fn period_of(t: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", t.year(), t.month())
}

/// First instant of the month of `t` and of the next month.
pub fn period_bounds(t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc
        .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(t);
    let (y, m) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    let end = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or(t);
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_calendar_months() {
        let t = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(period_of(t), "2026-12");
        let (s, e) = period_bounds(t);
        assert_eq!(crate::db::ts(s), "2026-12-01T00:00:00Z");
        assert_eq!(crate::db::ts(e), "2027-01-01T00:00:00Z");
    }
}
