//! Shared quotas on PostgreSQL: admission through `tollgate_admit` (see
//! migrations/postgres/V5), balances through `tollgate_held`, and the leases
//! of reservations.

use super::Pg;
use crate::db::quota::{Admission, Admitted, Held};
use crate::db::DbResult;

impl Pg {
    pub async fn admit(&self, a: &Admission) -> DbResult<Admitted> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT hold, reserved, cap, avail, wait_secs
                 FROM tollgate_admit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .await?;
        let r = c
            .query_one(
                &st,
                &[
                    &a.user_id,
                    &a.key_id,
                    &a.user_limit,
                    &a.key_limit,
                    &a.period,
                    &a.rpm,
                    &a.prompt,
                    &a.wanted,
                    &a.n,
                    &a.min_cap,
                    &a.embeddings,
                    &a.instance,
                    &a.lease_secs,
                ],
            )
            .await?;
        Ok(Admitted {
            hold: r.get(0),
            reserved: r.get::<_, Option<i64>>(1).unwrap_or(0),
            cap: r.get(2),
            avail: r.get::<_, Option<i64>>(3).unwrap_or(0),
            wait_secs: r.get(4),
        })
    }

    pub async fn held(
        &self,
        user_id: i64,
        key_id: Option<i64>,
        period: &str,
    ) -> DbResult<(Held, Option<Held>)> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT used_user, held_user, used_key, held_key FROM tollgate_held($1, $2, $3)",
            )
            .await?;
        let r = c.query_one(&st, &[&user_id, &key_id, &period]).await?;
        let user = Held {
            used: r.get(0),
            reserved: r.get(1),
        };
        let key = key_id.map(|_| Held {
            used: r.get(2),
            reserved: r.get(3),
        });
        Ok((user, key))
    }

    pub async fn shrink(&self, hold: i64, charged: i64) -> DbResult<()> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("UPDATE reservations SET tokens = LEAST(tokens, $2) WHERE id = $1")
            .await?;
        c.execute(&st, &[&hold, &charged]).await?;
        Ok(())
    }

    /// Releases a reservation no call will settle (its admission was abandoned).
    pub async fn release(&self, hold: i64) -> DbResult<()> {
        self.client()
            .await?
            .execute("DELETE FROM reservations WHERE id = $1", &[&hold])
            .await?;
        Ok(())
    }

    pub async fn renew_reservations(&self, instance: &str, lease_secs: f64) -> DbResult<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE reservations SET expires_at = clock_timestamp() + $2 * INTERVAL '1 second'
             WHERE instance = $1 AND expires_at > clock_timestamp()",
            &[&instance, &lease_secs],
        )
        .await?;
        c.execute(
            "DELETE FROM reservations WHERE expires_at <= clock_timestamp()",
            &[],
        )
        .await?;
        Ok(())
    }
}
