-- PostgreSQL's V8 lets replicas hold slices of a user's allowance (SPEC §11).
-- One SQLite instance keeps its quotas in memory; this index serves the
-- start-up read of pay-as-you-go spending, and the file keeps the two
-- backends' versions in step.
CREATE INDEX usage_period_credit ON usage_period (user_id) WHERE credit_micros <> 0;
