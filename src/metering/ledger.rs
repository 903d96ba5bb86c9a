//! The balance ledger: tokens charged and reserved this period, per user and
//! per key, held in memory behind one lock so that a reservation against both
//! is atomic. Rebuilt from the database's period totals at start, so nothing
//! stays reserved after a restart.

use crate::db::usage::PeriodTotal;
use hashbrown::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub used: i64,
    pub reserved: i64,
}

/// Whose balance a call draws on, and their limits this period.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    pub user_id: i64,
    pub user_limit: i64,
    pub key_id: Option<i64>,
    pub key_limit: Option<i64>,
}

#[derive(Debug, Default)]
struct State {
    period: String,
    users: HashMap<i64, Balance>,
    keys: HashMap<i64, Balance>,
}

impl State {
    /// Starts a new period: what was charged belongs to the old one; calls in
    /// flight keep their reservations.
    fn roll(&mut self, period: &str) {
        if self.period != period {
            self.period = period.to_owned();
            self.users.retain(|_, b| {
                b.used = 0;
                b.reserved > 0
            });
            self.keys.retain(|_, b| {
                b.used = 0;
                b.reserved > 0
            });
        }
    }

    fn available(&self, a: &Account) -> i64 {
        let u = self.users.get(&a.user_id).copied().unwrap_or_default();
        let mut avail = a.user_limit - u.used - u.reserved;
        if let (Some(id), Some(limit)) = (a.key_id, a.key_limit) {
            let k = self.keys.get(&id).copied().unwrap_or_default();
            avail = avail.min(limit - k.used - k.reserved);
        }
        avail.max(0)
    }
}

#[derive(Debug, Default)]
pub struct Ledger {
    state: Mutex<State>,
}

impl Ledger {
    /// A ledger for `period` holding what was charged in it.
    pub fn new(period: &str, totals: &[PeriodTotal]) -> Ledger {
        let mut st = State {
            period: period.to_owned(),
            ..Default::default()
        };
        for t in totals {
            st.users.entry(t.user_id).or_default().used += t.tokens;
            if t.key_id != 0 {
                st.keys.entry(t.key_id).or_default().used += t.tokens;
            }
        }
        Ledger {
            state: Mutex::new(st),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tokens the account may still use this period (never negative).
    pub fn available(&self, a: &Account, period: &str) -> i64 {
        let mut st = self.lock();
        st.roll(period);
        st.available(a)
    }

    /// Atomically decides and takes a reservation: `decide` sees what is
    /// available and returns the amount to reserve, or refuses.
    pub fn reserve<T, E>(
        &self,
        a: &Account,
        period: &str,
        decide: impl FnOnce(i64) -> Result<(i64, T), E>,
    ) -> Result<(i64, T), E> {
        let mut st = self.lock();
        st.roll(period);
        let (amount, extra) = decide(st.available(a))?;
        st.users.entry(a.user_id).or_default().reserved += amount;
        if let Some(k) = a.key_id {
            st.keys.entry(k).or_default().reserved += amount;
        }
        Ok((amount, extra))
    }

    /// Releases `reserved` and charges `charged` to the current period; returns
    /// what the account may still use afterwards.
    pub fn settle(&self, a: &Account, period: &str, reserved: i64, charged: i64) -> i64 {
        let mut st = self.lock();
        st.roll(period);
        let u = st.users.entry(a.user_id).or_default();
        u.reserved = (u.reserved - reserved).max(0);
        u.used += charged;
        if let Some(k) = a.key_id {
            let b = st.keys.entry(k).or_default();
            b.reserved = (b.reserved - reserved).max(0);
            b.used += charged;
        }
        st.available(a)
    }

    pub fn user(&self, user_id: i64, period: &str) -> Balance {
        let mut st = self.lock();
        st.roll(period);
        st.users.get(&user_id).copied().unwrap_or_default()
    }

    pub fn key(&self, key_id: i64, period: &str) -> Balance {
        let mut st = self.lock();
        st.roll(period);
        st.keys.get(&key_id).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(key_limit: Option<i64>) -> Account {
        Account {
            user_id: 1,
            user_limit: 1000,
            key_id: Some(9),
            key_limit,
        }
    }

    #[test]
    fn reserve_settle_and_roll() {
        let t = |key_id, tokens| PeriodTotal {
            user_id: 1,
            key_id,
            tokens,
            cost: 0,
        };
        let l = Ledger::new("2026-11", &[t(9, 100), t(0, 50)]);
        assert_eq!(l.available(&acct(None), "2026-11"), 850);
        assert_eq!(l.available(&acct(Some(300)), "2026-11"), 200);
        let (amt, _) = l
            .reserve::<(), ()>(&acct(Some(300)), "2026-11", |avail| Ok((avail, ())))
            .unwrap();
        assert_eq!(amt, 200);
        assert_eq!(l.available(&acct(Some(300)), "2026-11"), 0);
        assert_eq!(l.settle(&acct(Some(300)), "2026-11", 200, 30), 170);
        assert_eq!(
            l.user(1, "2026-11"),
            Balance {
                used: 180,
                reserved: 0
            }
        );
        // a new month starts from zero
        assert_eq!(l.available(&acct(None), "2026-12"), 1000);
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limit() {
        let l = std::sync::Arc::new(Ledger::new("p", &[]));
        let granted = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (l, g) = (l.clone(), granted.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        let r = l.reserve(&acct(None), "p", |avail| {
                            if avail >= 7 {
                                Ok((7, ()))
                            } else {
                                Err(())
                            }
                        });
                        if r.is_ok() {
                            g.fetch_add(7, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            granted.load(std::sync::atomic::Ordering::SeqCst),
            7 * (1000 / 7)
        );
    }
}
