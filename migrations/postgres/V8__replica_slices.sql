-- Replicas hold slices of a user's allowance (SPEC §11): one reservations row
-- per replica, user, key and period holds the tokens and micro-dollars the
-- replica took from the database and has not yet charged or given back. A
-- replica admits calls against its slice in memory and reaches the database
-- only to grow the slice (tollgate_grow), to give back what it did not use
-- (tollgate_return), and through the usage writer, which moves each charge
-- from the slice to usage_period in one transaction. Every slice counts as
-- reserved, so the replicas together never hold more than the plan allows.
-- Replicas of the version before this one must all be stopped before it runs.

DROP FUNCTION tollgate_admit(BIGINT, BIGINT, BIGINT, BIGINT, TEXT, BIGINT, BIGINT, BIGINT, BIGINT,
    BIGINT, BOOLEAN, TEXT, DOUBLE PRECISION);
DROP FUNCTION tollgate_held(BIGINT, BIGINT, TEXT);
DELETE FROM reservations;
CREATE UNIQUE INDEX reservations_slice ON reservations (instance, user_id, (COALESCE(key_id, 0)), period);
-- A pay-as-you-go user's spending, every period.
CREATE INDEX usage_period_credit ON usage_period (user_id) WHERE credit_micros <> 0;

-- Grows p_instance's slice: counts p_arrivals calls against the user's
-- requests per minute (GCRA, as governor keeps it in memory; fewer when
-- fewer fit, none and wait_secs set when none fits), then grants tokens: at
-- least p_need when that much is left, up to p_want while that is at most a
-- quarter of what is left, else all of it up to p_need; the same in
-- micro-dollars when a money limit applies (avail_usd not NULL).
CREATE FUNCTION tollgate_grow(
    p_user BIGINT, p_key BIGINT, p_period TEXT, p_user_limit BIGINT, p_key_limit BIGINT,
    p_user_usd BIGINT, p_key_usd BIGINT, p_payg BOOLEAN, p_rpm BIGINT, p_arrivals BIGINT,
    p_need BIGINT, p_want BIGINT, p_need_usd BIGINT, p_want_usd BIGINT,
    p_instance TEXT, p_lease_secs DOUBLE PRECISION,
    OUT tokens BIGINT, OUT micros BIGINT, OUT arrivals BIGINT,
    OUT avail BIGINT, OUT avail_usd BIGINT, OUT wait_secs BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    now_s  DOUBLE PRECISION;
    t      DOUBLE PRECISION;
    iv     DOUBLE PRECISION;
    user_t BIGINT;
    user_m BIGINT;
    key_t BIGINT;
    key_m BIGINT;
    left_m BIGINT;
BEGIN
    -- One grant per user at a time, on every replica; released at commit.
    PERFORM pg_advisory_xact_lock(4611686018427387904 + p_user);
    tokens := 0;
    micros := 0;
    arrivals := 0;

    IF p_arrivals > 0 THEN
        now_s := extract(epoch FROM clock_timestamp());
        iv := 60.0 / GREATEST(p_rpm, 1);
        SELECT r.tat INTO t FROM rate_limits r WHERE r.user_id = p_user;
        t := GREATEST(COALESCE(t, now_s), now_s);
        arrivals := LEAST(p_arrivals, FLOOR((60.0 + now_s - t) / iv + 1e-9)::BIGINT);
        IF arrivals <= 0 THEN
            arrivals := 0;
            wait_secs := GREATEST(CEIL(t - (60.0 - iv) - now_s), 1);
            RETURN;
        END IF;
        INSERT INTO rate_limits (user_id, tat) VALUES (p_user, t + arrivals * iv)
            ON CONFLICT (user_id) DO UPDATE SET tat = EXCLUDED.tat;
    END IF;

    -- Every sum in ONE statement: under READ COMMITTED each statement has its
    -- own snapshot, and the usage writer moves a charge from a slice to
    -- usage_period in one commit; two statements could see it in neither.
    SELECT
        (SELECT COALESCE(SUM(u.tokens), 0) FROM usage_period u
          WHERE u.period = p_period AND u.user_id = p_user)
      + (SELECT COALESCE(SUM(r.tokens), 0) FROM reservations r
          WHERE r.user_id = p_user AND r.period = p_period AND r.expires_at > clock_timestamp()),
        (SELECT COALESCE(SUM(u.cost_micros), 0) FROM usage_period u
          WHERE u.period = p_period AND u.user_id = p_user)
      + (SELECT COALESCE(SUM(r.usd_micros), 0) FROM reservations r
          WHERE r.user_id = p_user AND r.period = p_period AND r.expires_at > clock_timestamp()),
        (SELECT COALESCE(SUM(u.tokens), 0) FROM usage_period u
          WHERE u.period = p_period AND u.key_id = p_key)
      + (SELECT COALESCE(SUM(r.tokens), 0) FROM reservations r
          WHERE r.key_id = p_key AND r.period = p_period AND r.expires_at > clock_timestamp()),
        (SELECT COALESCE(SUM(u.cost_micros), 0) FROM usage_period u
          WHERE u.period = p_period AND u.key_id = p_key)
      + (SELECT COALESCE(SUM(r.usd_micros), 0) FROM reservations r
          WHERE r.key_id = p_key AND r.period = p_period AND r.expires_at > clock_timestamp()),
        CASE WHEN p_payg THEN
            (SELECT COALESCE(SUM(c.amount_micros), 0) FROM credits c WHERE c.user_id = p_user)
          - (SELECT COALESCE(SUM(u.credit_micros), 0) FROM usage_period u
              WHERE u.user_id = p_user AND u.credit_micros <> 0)
          - (SELECT COALESCE(SUM(r.usd_micros), 0) FROM reservations r
              WHERE r.user_id = p_user AND r.expires_at > clock_timestamp())
        END
      INTO user_t, user_m, key_t, key_m, left_m;   -- charged + held: the user's, the key's
    avail := p_user_limit - user_t;
    IF p_user_usd IS NOT NULL THEN
        avail_usd := p_user_usd - user_m;
    END IF;
    IF p_key IS NOT NULL AND p_key_limit IS NOT NULL THEN
        avail := LEAST(avail, p_key_limit - key_t);
    END IF;
    IF p_key IS NOT NULL AND p_key_usd IS NOT NULL THEN
        avail_usd := LEAST(COALESCE(avail_usd, p_key_usd - key_m), p_key_usd - key_m);
    END IF;
    IF p_payg THEN
        avail_usd := LEAST(COALESCE(avail_usd, left_m), left_m);
    END IF;

    avail := GREATEST(avail, 0);
    tokens := LEAST(avail, GREATEST(p_need, LEAST(p_want, avail / 4)));
    IF avail_usd IS NOT NULL THEN
        avail_usd := GREATEST(avail_usd, 0);
        micros := LEAST(avail_usd, GREATEST(p_need_usd, LEAST(p_want_usd, avail_usd / 4)));
    END IF;
    IF tokens > 0 OR micros > 0 THEN
        INSERT INTO reservations AS r (user_id, key_id, period, tokens, usd_micros, instance, expires_at)
            VALUES (p_user, p_key, p_period, tokens, micros, p_instance,
                    clock_timestamp() + p_lease_secs * INTERVAL '1 second')
            ON CONFLICT (instance, user_id, (COALESCE(key_id, 0)), period) DO UPDATE SET
                tokens = r.tokens + EXCLUDED.tokens,
                usd_micros = r.usd_micros + EXCLUDED.usd_micros,
                expires_at = EXCLUDED.expires_at;
    END IF;
END $$;

-- Gives back what p_instance's slices did not use: tokens, micro-dollars and
-- the rate limiter's seconds of unused arrivals. Slices left empty go.
CREATE FUNCTION tollgate_return(p_instance TEXT, p_users BIGINT[], p_keys BIGINT[], p_periods TEXT[],
    p_tokens BIGINT[], p_micros BIGINT[], p_rate_secs DOUBLE PRECISION[])
RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    UPDATE reservations r SET
        tokens = GREATEST(r.tokens - b.tokens, 0),
        usd_micros = GREATEST(r.usd_micros - b.micros, 0)
    FROM UNNEST(p_users, p_keys, p_periods, p_tokens, p_micros) AS b(user_id, key_id, period, tokens, micros)
    WHERE r.instance = p_instance AND r.user_id = b.user_id AND COALESCE(r.key_id, 0) = b.key_id
      AND r.period = b.period;
    DELETE FROM reservations WHERE instance = p_instance AND tokens <= 0 AND usd_micros <= 0;
    UPDATE rate_limits l SET tat = l.tat - b.secs
    FROM (SELECT user_id, SUM(secs) AS secs FROM UNNEST(p_users, p_rate_secs) AS x(user_id, secs)
          WHERE secs > 0 GROUP BY user_id) b
    WHERE l.user_id = b.user_id;
END $$;

-- Tokens and micro-dollars charged in p_period and held by slices, for a user
-- and one key (whoever holds it), with the user's prepaid credit left and the
-- money all their live slices hold, read in ONE statement (one snapshot:
-- the usage writer moves a charge from a slice to usage_period in one
-- transaction). plpgsql keeps the plan for the session.
CREATE FUNCTION tollgate_held(p_user BIGINT, p_key BIGINT, p_period TEXT,
    OUT used_user BIGINT, OUT held_user BIGINT, OUT usd_used_user BIGINT, OUT usd_held_user BIGINT,
    OUT used_key BIGINT, OUT held_key BIGINT, OUT usd_used_key BIGINT, OUT usd_held_key BIGINT,
    OUT credit_left BIGINT, OUT usd_held_all BIGINT)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT
        (SELECT COALESCE(SUM(tokens), 0)::BIGINT FROM usage_period
          WHERE period = p_period AND user_id = p_user),
        (SELECT COALESCE(SUM(tokens), 0)::BIGINT FROM reservations
          WHERE user_id = p_user AND period = p_period AND expires_at > clock_timestamp()),
        (SELECT COALESCE(SUM(cost_micros), 0)::BIGINT FROM usage_period
          WHERE period = p_period AND user_id = p_user),
        (SELECT COALESCE(SUM(usd_micros), 0)::BIGINT FROM reservations
          WHERE user_id = p_user AND period = p_period AND expires_at > clock_timestamp()),
        (SELECT COALESCE(SUM(tokens), 0)::BIGINT FROM usage_period
          WHERE period = p_period AND key_id = p_key),
        (SELECT COALESCE(SUM(tokens), 0)::BIGINT FROM reservations
          WHERE key_id = p_key AND period = p_period AND expires_at > clock_timestamp()),
        (SELECT COALESCE(SUM(cost_micros), 0)::BIGINT FROM usage_period
          WHERE period = p_period AND key_id = p_key),
        (SELECT COALESCE(SUM(usd_micros), 0)::BIGINT FROM reservations
          WHERE key_id = p_key AND period = p_period AND expires_at > clock_timestamp()),
        (SELECT COALESCE(SUM(amount_micros), 0)::BIGINT FROM credits WHERE user_id = p_user)
          - (SELECT COALESCE(SUM(credit_micros), 0)::BIGINT FROM usage_period
              WHERE user_id = p_user AND credit_micros <> 0),
        (SELECT COALESCE(SUM(usd_micros), 0)::BIGINT FROM reservations
          WHERE user_id = p_user AND expires_at > clock_timestamp())
    INTO used_user, held_user, usd_used_user, usd_held_user, used_key, held_key, usd_used_key,
         usd_held_key, credit_left, usd_held_all;
END $$;
