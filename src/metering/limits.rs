//! Requests per minute per user, across all their keys and tokens, from their
//! plan (GCRA through governor: a burst of the plan's rate, refilled evenly).

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct RateLimits {
    users: Mutex<HashMap<i64, Arc<(u32, DefaultDirectRateLimiter)>>>,
}

impl RateLimits {
    /// `Err(seconds to wait)` when the user is over `rpm`.
    pub fn check(&self, user_id: i64, rpm: i64) -> Result<(), u64> {
        let rpm = u32::try_from(rpm.max(1)).unwrap_or(u32::MAX);
        let limiter = {
            let mut m = self.users.lock().unwrap_or_else(|e| e.into_inner());
            match m.get(&user_id) {
                Some(l) if l.0 == rpm => l.clone(),
                _ => {
                    let n = NonZeroU32::new(rpm).unwrap_or(NonZeroU32::MIN);
                    let l = Arc::new((rpm, RateLimiter::direct(Quota::per_minute(n))));
                    m.insert(user_id, l.clone());
                    l
                }
            }
        };
        limiter.1.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn burst_then_refuse() {
        let l = super::RateLimits::default();
        for _ in 0..3 {
            assert!(l.check(1, 3).is_ok());
        }
        let wait = l.check(1, 3).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(l.check(2, 3).is_ok(), "per user");
    }
}
