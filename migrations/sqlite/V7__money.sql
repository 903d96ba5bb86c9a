-- Money (SPEC §12): USD limits on plans and keys, prepaid credits with their
-- ledger, and every cost as an integer number of micro-dollars (1e-6 USD), so
-- that no sum in the database is a float sum.

ALTER TABLE plans ADD COLUMN monthly_usd_micros INTEGER CHECK (monthly_usd_micros >= 0); -- NULL: no USD limit
ALTER TABLE plans ADD COLUMN pay_as_you_go INTEGER NOT NULL DEFAULT 0;                  -- spends credit_usd
ALTER TABLE api_keys ADD COLUMN monthly_usd_limit_micros INTEGER CHECK (monthly_usd_limit_micros >= 0);

-- The credit ledger: one entry per top-up (positive) or deduction (negative).
-- A user's balance is the sum of the entries minus what their pay-as-you-go
-- calls spent (usage_period.credit_micros, every period).
CREATE TABLE credits (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amount_micros INTEGER NOT NULL CHECK (amount_micros <> 0),
    note          TEXT NOT NULL DEFAULT '',
    created_by    TEXT,                          -- the admin's username; NULL: the CLI
    created_at    TEXT NOT NULL
);
CREATE INDEX credits_user ON credits (user_id, id);

-- A key's USD limit is part of what the credential cache holds.
DROP TRIGGER keys_changed_upd;
CREATE TRIGGER keys_changed_upd AFTER UPDATE OF user_id, name, description, key_hash, expires_at, revoked,
    allowed_models, monthly_token_limit, monthly_usd_limit_micros ON api_keys BEGIN
    UPDATE change_counter SET n = n + 1;
    INSERT INTO credential_changes (seq, tbl, row_id, key_hash)
        SELECT n, 'api_keys', NEW.id, OLD.key_hash FROM change_counter;
END;

-- Costs in micro-dollars instead of REAL dollars.
ALTER TABLE requests ADD COLUMN cost_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN credit_micros INTEGER NOT NULL DEFAULT 0;   -- paid from credit_usd
UPDATE requests SET cost_micros = CAST(ROUND(cost_usd * 1000000) AS INTEGER);
ALTER TABLE requests DROP COLUMN cost_usd;

ALTER TABLE usage_daily ADD COLUMN cost_micros INTEGER NOT NULL DEFAULT 0;
UPDATE usage_daily SET cost_micros = CAST(ROUND(cost_usd * 1000000) AS INTEGER);
ALTER TABLE usage_daily DROP COLUMN cost_usd;

ALTER TABLE usage_period ADD COLUMN cost_micros INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_period ADD COLUMN credit_micros INTEGER NOT NULL DEFAULT 0;
UPDATE usage_period SET cost_micros = (
    SELECT COALESCE(SUM(r.cost_micros), 0) FROM requests r
    WHERE r.user_id = usage_period.user_id AND COALESCE(r.key_id, 0) = usage_period.key_id
      AND substr(r.created_at, 1, 7) = usage_period.period);
