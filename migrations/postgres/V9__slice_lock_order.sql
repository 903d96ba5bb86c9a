-- Row locks taken in one order, so that the grants of every replica, a
-- replica's give-back, its usage writer and its lease renewal cannot deadlock
-- one another: a user's rate_limits row before any slice, and within a table
-- the rows in key order, each statement then changing only the rows it
-- locked. Before this, tollgate_return locked slices and then rate rows while
-- tollgate_grow locks a rate row and then a slice, and the multi-row UPDATEs
-- locked rows in whatever order their plan read them: a deadlock kept both
-- sides waiting for deadlock_timeout (1 s) before one was cancelled and
-- retried, and every call of that user on that replica waited with them.

CREATE OR REPLACE FUNCTION tollgate_return(p_instance TEXT, p_users BIGINT[], p_keys BIGINT[],
    p_periods TEXT[], p_tokens BIGINT[], p_micros BIGINT[], p_rate_secs DOUBLE PRECISION[])
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    ids BIGINT[];
BEGIN
    PERFORM 1 FROM rate_limits l
     WHERE l.user_id IN (SELECT x.user_id FROM UNNEST(p_users, p_rate_secs) AS x(user_id, secs)
                          WHERE x.secs > 0)
     ORDER BY l.user_id FOR UPDATE;
    UPDATE rate_limits l SET tat = l.tat - b.secs
    FROM (SELECT x.user_id, SUM(x.secs) AS secs FROM UNNEST(p_users, p_rate_secs) AS x(user_id, secs)
          WHERE x.secs > 0 GROUP BY x.user_id) b
    WHERE l.user_id = b.user_id;

    SELECT array_agg(s.id) INTO ids FROM (
        SELECT r.id FROM reservations r, UNNEST(p_users, p_keys, p_periods) AS b(user_id, key_id, period)
         WHERE r.instance = p_instance AND r.user_id = b.user_id
           AND COALESCE(r.key_id, 0) = b.key_id AND r.period = b.period
         ORDER BY r.user_id, COALESCE(r.key_id, 0), r.period FOR UPDATE OF r) s;
    -- Summed per slice: an UPDATE … FROM applies one joined row per target
    -- row, so two returns of one slice in a batch (a settle's return cut
    -- short at shutdown, then the slice's own) must arrive as one.
    UPDATE reservations r SET
        tokens = GREATEST(r.tokens - b.tokens, 0),
        usd_micros = GREATEST(r.usd_micros - b.micros, 0)
    FROM (SELECT x.user_id, x.key_id, x.period, SUM(x.tokens)::BIGINT AS tokens,
                 SUM(x.micros)::BIGINT AS micros
            FROM UNNEST(p_users, p_keys, p_periods, p_tokens, p_micros)
                 AS x(user_id, key_id, period, tokens, micros)
           GROUP BY x.user_id, x.key_id, x.period) b
    WHERE r.id = ANY(ids) AND r.user_id = b.user_id AND COALESCE(r.key_id, 0) = b.key_id
      AND r.period = b.period;
    DELETE FROM reservations r WHERE r.id = ANY(ids) AND r.tokens <= 0 AND r.usd_micros <= 0;
END $$;

-- The usage writer's move of charges out of slices, in the transaction that
-- writes the records and the roll-ups (those it upserts in key order too).
-- One entry per slice: the writer sums a batch's charges per slice first.
CREATE FUNCTION tollgate_take(p_instances TEXT[], p_users BIGINT[], p_keys BIGINT[],
    p_periods TEXT[], p_tokens BIGINT[], p_micros BIGINT[])
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    ids BIGINT[];
BEGIN
    SELECT array_agg(s.id) INTO ids FROM (
        SELECT r.id FROM reservations r,
            UNNEST(p_instances, p_users, p_keys, p_periods) AS c(instance, user_id, key_id, period)
         WHERE r.instance = c.instance AND r.user_id = c.user_id
           AND COALESCE(r.key_id, 0) = c.key_id AND r.period = c.period
         ORDER BY r.instance, r.user_id, COALESCE(r.key_id, 0), r.period FOR UPDATE OF r) s;
    UPDATE reservations r SET
        tokens = GREATEST(r.tokens - c.tokens, 0),
        usd_micros = GREATEST(r.usd_micros - c.micros, 0)
    FROM UNNEST(p_instances, p_users, p_keys, p_periods, p_tokens, p_micros)
        AS c(instance, user_id, key_id, period, tokens, micros)
    WHERE r.id = ANY(ids) AND r.instance = c.instance AND r.user_id = c.user_id
      AND COALESCE(r.key_id, 0) = c.key_id AND r.period = c.period;
END $$;

-- Extends p_instance's leases, then drops every lapsed reservation (those of
-- replicas that died).
CREATE FUNCTION tollgate_renew(p_instance TEXT, p_lease_secs DOUBLE PRECISION)
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    ids BIGINT[];
BEGIN
    SELECT array_agg(s.id) INTO ids FROM (
        SELECT r.id FROM reservations r
         WHERE r.instance = p_instance AND r.expires_at > clock_timestamp()
         ORDER BY r.user_id, COALESCE(r.key_id, 0), r.period FOR UPDATE) s;
    UPDATE reservations SET expires_at = clock_timestamp() + p_lease_secs * INTERVAL '1 second'
     WHERE id = ANY(ids) AND expires_at > clock_timestamp();
    SELECT array_agg(s.id) INTO ids FROM (
        SELECT r.id FROM reservations r WHERE r.expires_at <= clock_timestamp()
         ORDER BY r.instance, r.user_id, COALESCE(r.key_id, 0), r.period FOR UPDATE) s;
    DELETE FROM reservations WHERE id = ANY(ids) AND expires_at <= clock_timestamp();
END $$;
