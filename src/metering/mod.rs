//! Metering: the in-memory balance ledger (`ledger`), the per-call guard that
//! reserves before and settles after by construction (`call`), the background
//! usage writer (`writer`), the calls in flight (`calls`), prices
//! (`pricing`), token estimates (`estimate`), requests-per-minute limits (`limits`) and admission, local or shared
//! between replicas (`quota`).

pub mod call;
pub mod calls;
pub mod estimate;
pub mod ledger;
pub mod limits;
pub mod pricing;
pub mod quota;
pub mod writer;

use chrono::{DateTime, Datelike, TimeZone, Utc};

/// The usage period (calendar month, UTC) of `t`, as `YYYY-MM`.
pub fn period_of(t: DateTime<Utc>) -> String {
    let (y, m) = (t.year(), t.month());
    if !(0..10000).contains(&y) {
        return format!("{y:04}-{m:02}");
    }
    // Twice on every call's path: digits by hand, not through `format!`.
    let digit = |d: u32| char::from(b'0' + d as u8);
    let y = y as u32;
    let mut s = String::with_capacity(7);
    for d in [
        y / 1000,
        y / 100 % 10,
        y / 10 % 10,
        y % 10,
        10,
        m / 10,
        m % 10,
    ] {
        s.push(if d == 10 { '-' } else { digit(d) });
    }
    s
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
        let early = Utc.with_ymd_and_hms(987, 3, 1, 0, 0, 0).unwrap();
        assert_eq!(period_of(early), "0987-03");
        let (s, e) = period_bounds(t);
        assert_eq!(crate::db::ts(s), "2026-12-01T00:00:00Z");
        assert_eq!(crate::db::ts(e), "2027-01-01T00:00:00Z");
    }
}
