//! The balance ledger: tokens charged and reserved this period, per user and
//! per key, held in memory behind one lock so that a reservation against both
//! is atomic. Rebuilt from the database's period totals at start, so nothing
//! stays reserved after a restart.

use crate::db::usage::PeriodTotal;
use hashbrown::HashMap;
use std::sync::Mutex;

/// Tokens and money (micro-dollars) together: what a call reserves, what it
/// is charged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    pub tokens: i64,
    pub micros: i64,
}

/// What an account may still use: tokens, and micro-dollars when a USD
/// limit or prepaid credit applies (`None`: no money limit).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Avail {
    pub tokens: i64,
    pub micros: Option<i64>,
}

impl Avail {
    /// What is left after `spent` more.
    pub fn less(self, spent: Amount) -> Avail {
        Avail {
            tokens: (self.tokens - spent.tokens).max(0),
            micros: self.micros.map(|m| (m - spent.micros).max(0)),
        }
    }
}

/// Charged and reserved this period, in tokens and micro-dollars.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub used: i64,
    pub reserved: i64,
    pub usd_used: i64,
    pub usd_reserved: i64,
}

impl Balance {
    fn take(&mut self, a: Amount) {
        self.reserved += a.tokens;
        self.usd_reserved += a.micros;
    }

    fn settle(&mut self, reserved: Amount, charged: Amount) {
        self.reserved = (self.reserved - reserved.tokens).max(0);
        self.usd_reserved = (self.usd_reserved - reserved.micros).max(0);
        self.used += charged.tokens;
        self.usd_used += charged.micros;
    }

    fn holds(&self) -> bool {
        self.reserved > 0 || self.usd_reserved > 0
    }
}

/// A user's prepaid credit: what is left of it (entries minus what
/// pay-as-you-go calls were charged) and what calls in flight hold.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    pub left: i64,
    pub reserved: i64,
}

/// Whose balance a call draws on, and their limits this period.
#[derive(Debug, Clone, Copy, Default)]
pub struct Account {
    pub user_id: i64,
    pub user_limit: i64,
    pub key_id: Option<i64>,
    pub key_limit: Option<i64>,
    /// The plan's `monthly_usd` (micro-dollars).
    pub user_usd: Option<i64>,
    /// The key's `monthly_usd_limit` (micro-dollars).
    pub key_usd: Option<i64>,
    /// The plan spends prepaid credit.
    pub payg: bool,
}

impl Account {
    /// Whether some limit in dollars applies to this account's calls.
    pub fn money_limited(&self) -> bool {
        self.payg || self.user_usd.is_some() || self.key_usd.is_some()
    }
}

#[derive(Debug, Default)]
struct State {
    period: String,
    users: HashMap<i64, Balance>,
    keys: HashMap<i64, Balance>,
    credits: HashMap<i64, Credit>,
}

impl State {
    /// Starts a new period: what was charged belongs to the old one; calls in
    /// flight keep their reservations. Credit does not roll over: it is kept.
    fn roll(&mut self, period: &str) {
        if self.period != period {
            self.period = period.to_owned();
            for map in [&mut self.users, &mut self.keys] {
                map.retain(|_, b| {
                    b.used = 0;
                    b.usd_used = 0;
                    b.holds()
                });
            }
        }
    }

    fn available(&self, a: &Account) -> Avail {
        let u = self.users.get(&a.user_id).copied().unwrap_or_default();
        let k = a
            .key_id
            .and_then(|id| self.keys.get(&id).copied())
            .unwrap_or_default();
        let mut tokens = a.user_limit - u.used - u.reserved;
        if let (Some(_), Some(limit)) = (a.key_id, a.key_limit) {
            tokens = tokens.min(limit - k.used - k.reserved);
        }
        let mut micros: Option<i64> = None;
        let mut bound = |m: i64| micros = Some(micros.map_or(m, |x| x.min(m)));
        if a.payg {
            let c = self.credits.get(&a.user_id).copied().unwrap_or_default();
            bound(c.left - c.reserved);
        }
        if let Some(limit) = a.user_usd {
            bound(limit - u.usd_used - u.usd_reserved);
        }
        if let (Some(_), Some(limit)) = (a.key_id, a.key_usd) {
            bound(limit - k.usd_used - k.usd_reserved);
        }
        Avail {
            tokens: tokens.max(0),
            micros: micros.map(|m| m.max(0)),
        }
    }
}

#[derive(Debug, Default)]
pub struct Ledger {
    state: Mutex<State>,
}

impl Ledger {
    /// A ledger for `period` holding what was charged in it, and every
    /// user's prepaid credit left (user, micro-dollars).
    pub fn new(period: &str, totals: &[PeriodTotal], credits: &[(i64, i64)]) -> Ledger {
        let mut st = State {
            period: period.to_owned(),
            ..Default::default()
        };
        for t in totals {
            let charged = Amount {
                tokens: t.tokens,
                micros: t.cost,
            };
            st.users
                .entry(t.user_id)
                .or_default()
                .settle(Amount::default(), charged);
            if t.key_id != 0 {
                st.keys
                    .entry(t.key_id)
                    .or_default()
                    .settle(Amount::default(), charged);
            }
        }
        for &(user, left) in credits {
            st.credits.entry(user).or_default().left += left;
        }
        Ledger {
            state: Mutex::new(st),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the account may still use (never negative).
    pub fn available(&self, a: &Account, period: &str) -> Avail {
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
        decide: impl FnOnce(Avail) -> Result<(Amount, T), E>,
    ) -> Result<(Amount, T), E> {
        let mut st = self.lock();
        st.roll(period);
        let (amount, extra) = decide(st.available(a))?;
        st.users.entry(a.user_id).or_default().take(amount);
        if let Some(k) = a.key_id {
            st.keys.entry(k).or_default().take(amount);
        }
        if a.payg {
            st.credits.entry(a.user_id).or_default().reserved += amount.micros;
        }
        Ok((amount, extra))
    }

    /// Releases `reserved` and charges `charged` to the current period (and
    /// to the prepaid credit of a pay-as-you-go account); returns what the
    /// account may still use afterwards.
    pub fn settle(&self, a: &Account, period: &str, reserved: Amount, charged: Amount) -> Avail {
        let mut st = self.lock();
        st.roll(period);
        st.users
            .entry(a.user_id)
            .or_default()
            .settle(reserved, charged);
        if let Some(k) = a.key_id {
            st.keys.entry(k).or_default().settle(reserved, charged);
        }
        if a.payg {
            let c = st.credits.entry(a.user_id).or_default();
            c.reserved = (c.reserved - reserved.micros).max(0);
            c.left -= charged.micros;
        }
        st.available(a)
    }

    /// Adds a credit ledger entry (a top-up, or a deduction when negative).
    pub fn add_credit(&self, user_id: i64, micros: i64) {
        self.lock().credits.entry(user_id).or_default().left += micros;
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

    pub fn credit(&self, user_id: i64) -> Credit {
        self.lock()
            .credits
            .get(&user_id)
            .copied()
            .unwrap_or_default()
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
            ..Default::default()
        }
    }

    fn tokens(t: i64) -> Amount {
        Amount {
            tokens: t,
            micros: 0,
        }
    }

    fn avail(t: i64) -> Avail {
        Avail {
            tokens: t,
            micros: None,
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
        let l = Ledger::new("2026-11", &[t(9, 100), t(0, 50)], &[]);
        assert_eq!(l.available(&acct(None), "2026-11"), avail(850));
        assert_eq!(l.available(&acct(Some(300)), "2026-11"), avail(200));
        let (amt, _) = l
            .reserve::<(), ()>(&acct(Some(300)), "2026-11", |a| Ok((tokens(a.tokens), ())))
            .unwrap();
        assert_eq!(amt, tokens(200));
        assert_eq!(l.available(&acct(Some(300)), "2026-11"), avail(0));
        assert_eq!(
            l.settle(&acct(Some(300)), "2026-11", tokens(200), tokens(30)),
            avail(170)
        );
        assert_eq!(
            l.user(1, "2026-11"),
            Balance {
                used: 180,
                ..Default::default()
            }
        );
        // a new month starts from zero
        assert_eq!(l.available(&acct(None), "2026-12"), avail(1000));
    }

    #[test]
    fn money_limits_bind_alongside_tokens() {
        let money = |t, m| Amount {
            tokens: t,
            micros: m,
        };
        let spent = PeriodTotal {
            user_id: 1,
            key_id: 9,
            tokens: 10,
            cost: 4_000,
        };
        let l = Ledger::new("p", &[spent], &[(1, 50_000)]);
        let plan = Account {
            user_usd: Some(10_000),
            ..acct(None)
        };
        assert_eq!(l.available(&plan, "p").micros, Some(6_000));
        // A key's own USD limit binds below the plan's.
        let key = Account {
            key_usd: Some(5_000),
            ..plan
        };
        assert_eq!(l.available(&key, "p").micros, Some(1_000));
        // Pay-as-you-go spends credit; the plan's monthly_usd still caps it.
        let payg = Account {
            payg: true,
            user_usd: None,
            ..acct(None)
        };
        assert_eq!(l.available(&payg, "p").micros, Some(50_000));
        l.reserve::<(), ()>(&payg, "p", |_| Ok((money(5, 20_000), ())))
            .unwrap();
        assert_eq!(l.available(&payg, "p").micros, Some(30_000));
        assert_eq!(
            l.settle(&payg, "p", money(5, 20_000), money(3, 7_000))
                .micros,
            Some(43_000)
        );
        assert_eq!(
            l.credit(1),
            Credit {
                left: 43_000,
                reserved: 0
            }
        );
        l.add_credit(1, 1_000);
        assert_eq!(l.available(&payg, "p").micros, Some(44_000));
        // Credit is kept across periods; the monthly spending is not.
        let capped = Account {
            user_usd: Some(12_000),
            ..payg
        };
        assert_eq!(l.available(&capped, "p").micros, Some(1_000));
        assert_eq!(l.available(&capped, "q").micros, Some(12_000));
        assert_eq!(l.available(&payg, "q").micros, Some(44_000));
        // No money limit: no money figure.
        assert_eq!(l.available(&acct(None), "q").micros, None);
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limit() {
        let l = std::sync::Arc::new(Ledger::new("p", &[], &[]));
        let granted = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (l, g) = (l.clone(), granted.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        let r = l.reserve(&acct(None), "p", |a| {
                            if a.tokens >= 7 {
                                Ok((tokens(7), ()))
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
