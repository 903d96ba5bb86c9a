-- A user's credit balance (SPEC §12) subtracts what their pay-as-you-go calls
-- spent in every period. usage_period's key starts with the period, so that
-- sum read every row of every user; this index holds only the rows that
-- spent credit, by user.
CREATE INDEX usage_period_credit ON usage_period (user_id) WHERE credit_micros <> 0;
