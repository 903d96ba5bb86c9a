-- The outcome check as comparisons instead of `IN (...)`: SQLite evaluated the
-- IN list of a CHECK constraint by building a temporary index on every insert
-- (about a quarter of the cost of writing a usage record). Same columns, same
-- rule; the table is rebuilt because SQLite cannot alter a constraint.

CREATE TABLE requests_new (
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
    outcome           TEXT NOT NULL CHECK (outcome = 'ok' OR outcome = 'upstream_error'
                                         OR outcome = 'client_cancelled' OR outcome = 'refused'),
    latency_ms        INTEGER NOT NULL,
    ttft_ms           INTEGER,
    created_at        TEXT NOT NULL
);
INSERT INTO requests_new SELECT * FROM requests;
DROP TABLE requests;
ALTER TABLE requests_new RENAME TO requests;
CREATE INDEX requests_user ON requests (user_id, id);
