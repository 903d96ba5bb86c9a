//! Failed-login throttling (SPEC §4): more than 10 failures for one username
//! from one address, or more than 50 from one address, within 15 minutes are
//! answered 429 until the window passes — a correct password included.
//!
//! An attempt is counted *before* its password is checked ([`LoginThrottle::begin`])
//! and forgiven if it succeeds, so simultaneous attempts cannot all slip in
//! while the slow password hash of the first ones runs: of 45 concurrent wrong
//! passwords for one user, at most 10 are evaluated.
//!
//! Times are Unix seconds from the server's clock, so tests can move it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

/// The window, in seconds.
pub const WINDOW: i64 = 15 * 60;
pub const PER_USER_AND_ADDRESS: usize = 10;
pub const PER_ADDRESS: usize = 50;

#[derive(Default)]
pub struct LoginThrottle {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_user: HashMap<(String, IpAddr), VecDeque<i64>>,
    by_addr: HashMap<IpAddr, VecDeque<i64>>,
}

fn prune(q: &mut VecDeque<i64>, now: i64) {
    while q.front().is_some_and(|t| now - *t >= WINDOW) {
        q.pop_front();
    }
}

/// Seconds until the oldest failure leaves the window.
fn wait(q: &VecDeque<i64>, now: i64) -> u64 {
    q.front()
        .map(|t| (WINDOW - (now - *t)).clamp(1, WINDOW) as u64)
        .unwrap_or(1)
}

impl LoginThrottle {
    /// Counts a sign-in attempt as failed before its password is checked;
    /// `Err(seconds to wait)` when it must be refused unseen. A successful
    /// attempt is taken back with [`LoginThrottle::forgive`].
    pub fn begin(&self, username: &str, addr: IpAddr, now: i64) -> Result<(), u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let user_key = (username.to_lowercase(), addr);
        if let Some(q) = st.by_user.get_mut(&user_key) {
            prune(q, now);
            if q.len() >= PER_USER_AND_ADDRESS {
                return Err(wait(q, now));
            }
        }
        if let Some(q) = st.by_addr.get_mut(&addr) {
            prune(q, now);
            if q.len() >= PER_ADDRESS {
                return Err(wait(q, now));
            }
        }
        st.by_user.entry(user_key).or_default().push_back(now);
        st.by_addr.entry(addr).or_default().push_back(now);
        // Keep memory bounded: forget entries whose window has passed.
        if st.by_user.len() > 10_000 {
            st.by_user.retain(|_, q| {
                prune(q, now);
                !q.is_empty()
            });
            st.by_addr.retain(|_, q| {
                prune(q, now);
                !q.is_empty()
            });
        }
        Ok(())
    }

    /// Takes back the attempt [`LoginThrottle::begin`] counted at `at`: the
    /// password was right.
    pub fn forgive(&self, username: &str, addr: IpAddr, at: i64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let take_back = |q: &mut VecDeque<i64>| {
            if let Some(i) = q.iter().rposition(|t| *t == at) {
                q.remove(i);
            }
        };
        if let Some(q) = st.by_user.get_mut(&(username.to_lowercase(), addr)) {
            take_back(q);
        }
        if let Some(q) = st.by_addr.get_mut(&addr) {
            take_back(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eleventh_attempt_is_refused_until_the_window_passes() {
        let t = LoginThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let now = 1_700_000_000;
        for _ in 0..10 {
            assert!(t.begin("admin", a, now).is_ok());
        }
        let wait = t.begin("Admin", a, now).unwrap_err();
        assert!(wait > 800 && wait <= 900);
        assert!(
            t.begin("admin", b, now).is_ok(),
            "another address is not locked out"
        );
        assert!(t.begin("admin", a, now + WINDOW).is_ok());
    }

    #[test]
    fn a_successful_attempt_is_forgiven() {
        let t = LoginThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let now = 1_700_000_000;
        for _ in 0..20 {
            assert!(t.begin("admin", a, now).is_ok());
            t.forgive("admin", a, now);
        }
        for _ in 0..10 {
            assert!(t.begin("admin", a, now).is_ok());
        }
        assert!(t.begin("admin", a, now).is_err());
    }

    #[test]
    fn fifty_failures_from_one_address() {
        let t = LoginThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let now = 1_700_000_000;
        for i in 0..50 {
            assert!(t.begin(&format!("user{i}"), a, now).is_ok());
        }
        assert!(t.begin("someone-else", a, now).is_err());
    }
}
