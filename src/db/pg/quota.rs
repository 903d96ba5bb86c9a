//! Shared quotas on PostgreSQL: replicas' slices grown through
//! `tollgate_grow` (see migrations/postgres/V8), given back when idle,
//! balances through `tollgate_held`, and the leases of slices.

use super::Pg;
use crate::db::quota::{Balances, Grown, Growth, Held, SliceReturn};
use crate::db::DbResult;

impl Pg {
    pub async fn grow(&self, g: &Growth) -> DbResult<Grown> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT tokens, micros, arrivals, avail, avail_usd, wait_secs
                 FROM tollgate_grow($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            )
            .await?;
        let r = c
            .query_one(
                &st,
                &[
                    &g.user_id,
                    &g.key_id,
                    &g.period,
                    &g.user_limit,
                    &g.key_limit,
                    &g.user_usd,
                    &g.key_usd,
                    &g.payg,
                    &g.rpm,
                    &g.arrivals,
                    &g.need,
                    &g.want,
                    &g.need_usd,
                    &g.want_usd,
                    &g.instance,
                    &g.lease_secs,
                ],
            )
            .await?;
        Ok(Grown {
            tokens: r.get::<_, Option<i64>>(0).unwrap_or(0),
            micros: r.get::<_, Option<i64>>(1).unwrap_or(0),
            arrivals: r.get::<_, Option<i64>>(2).unwrap_or(0),
            avail: r.get::<_, Option<i64>>(3).unwrap_or(0),
            avail_usd: r.get(4),
            wait_secs: r.get(5),
        })
    }

    pub async fn return_slices(&self, instance: &str, back: &[SliceReturn]) -> DbResult<()> {
        if back.is_empty() {
            return Ok(());
        }
        let mut users = Vec::with_capacity(back.len());
        let mut keys = Vec::with_capacity(back.len());
        let mut periods = Vec::with_capacity(back.len());
        let mut tokens = Vec::with_capacity(back.len());
        let mut micros = Vec::with_capacity(back.len());
        let mut rate = Vec::with_capacity(back.len());
        for b in back {
            users.push(b.user_id);
            keys.push(b.key_id.unwrap_or(0));
            periods.push(b.period.as_str());
            tokens.push(b.tokens);
            micros.push(b.micros);
            rate.push(b.rate_secs);
        }
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT tollgate_return($1, $2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[],
                    $6::BIGINT[], $7::FLOAT8[])",
            )
            .await?;
        c.execute(
            &st,
            &[&instance, &users, &keys, &periods, &tokens, &micros, &rate],
        )
        .await?;
        Ok(())
    }

    pub async fn held(
        &self,
        user_id: i64,
        key_id: Option<i64>,
        period: &str,
    ) -> DbResult<Balances> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT used_user, held_user, usd_used_user, usd_held_user,
                        used_key, held_key, usd_used_key, usd_held_key, credit_left, usd_held_all
                 FROM tollgate_held($1, $2, $3)",
            )
            .await?;
        let r = c.query_one(&st, &[&user_id, &key_id, &period]).await?;
        Ok(Balances {
            user: Held {
                used: r.get(0),
                reserved: r.get(1),
                usd_used: r.get(2),
                usd_reserved: r.get(3),
            },
            key: key_id.map(|_| Held {
                used: r.get(4),
                reserved: r.get(5),
                usd_used: r.get(6),
                usd_reserved: r.get(7),
            }),
            credit_left: r.get(8),
            usd_held_all: r.get(9),
        })
    }

    pub async fn renew_reservations(&self, instance: &str, lease_secs: f64) -> DbResult<()> {
        let c = self.client().await?;
        // V9: leases extended and lapsed reservations dropped, each in key order.
        c.execute("SELECT tollgate_renew($1, $2)", &[&instance, &lease_secs])
            .await?;
        Ok(())
    }
}
