-- Metering: one record per call, daily roll-ups for usage queries, and per
-- period totals from which the in-memory balance ledger is rebuilt at start.

CREATE TABLE requests (
    id                INTEGER PRIMARY KEY,
    request_id        TEXT NOT NULL,
    user_id           INTEGER NOT NULL,      -- no foreign key: records outlive deleted users
    username          TEXT NOT NULL,
    key_id            INTEGER,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,         -- as the client named it
    upstream_model    TEXT NOT NULL,
    endpoint          TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens      INTEGER NOT NULL,
    cost_usd          REAL NOT NULL,
    estimated         INTEGER NOT NULL,
    priced            INTEGER NOT NULL,
    http_status       INTEGER NOT NULL,
    outcome           TEXT NOT NULL CHECK (outcome IN ('ok', 'upstream_error', 'client_cancelled', 'refused')),
    latency_ms        INTEGER NOT NULL,
    ttft_ms           INTEGER,
    created_at        TEXT NOT NULL
);
CREATE INDEX requests_user ON requests (user_id, id);

CREATE TABLE usage_daily (
    day               TEXT NOT NULL,         -- YYYY-MM-DD (UTC)
    user_id           INTEGER NOT NULL,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    tokens            INTEGER NOT NULL DEFAULT 0,   -- every charged token, cancelled calls included
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    requests          INTEGER NOT NULL DEFAULT 0,   -- successful calls
    ok_tokens         INTEGER NOT NULL DEFAULT 0,   -- tokens of successful calls
    cost_usd          REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user_id, provider, model)
);
CREATE INDEX usage_daily_user ON usage_daily (user_id, day);

CREATE TABLE usage_period (
    period  TEXT NOT NULL,                   -- YYYY-MM (UTC)
    user_id INTEGER NOT NULL,
    key_id  INTEGER NOT NULL,                -- 0: calls made with an access token
    tokens  INTEGER NOT NULL,
    PRIMARY KEY (period, user_id, key_id)
);
