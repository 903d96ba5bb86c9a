-- Accounts, plans and API keys. Never edit a migration that has shipped: add a new one.

CREATE TABLE plans (
    id                  INTEGER PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    monthly_tokens      INTEGER NOT NULL CHECK (monthly_tokens >= 0),
    requests_per_minute INTEGER NOT NULL CHECK (requests_per_minute >= 1),
    price_usd_month     REAL NOT NULL DEFAULT 0,
    allowed_models      TEXT NOT NULL DEFAULT '["*"]',   -- JSON array of glob patterns
    created_at          TEXT NOT NULL
);

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
    email         TEXT,
    password_hash TEXT,                                   -- NULL: signs in through OAuth only
    role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
    plan          TEXT NOT NULL REFERENCES plans (name) ON DELETE RESTRICT,
    disabled      INTEGER NOT NULL DEFAULT 0,
    token_version INTEGER NOT NULL DEFAULT 0,             -- bumped by a password change or a disable
    created_at    TEXT NOT NULL
);

CREATE TABLE oauth_identities (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider   TEXT NOT NULL,
    subject    TEXT NOT NULL,
    email      TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (provider, subject)
);
CREATE INDEX oauth_identities_user ON oauth_identities (user_id);

CREATE TABLE api_keys (
    id                  INTEGER PRIMARY KEY,
    user_id             INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    description         TEXT,
    key_hash            TEXT NOT NULL UNIQUE,             -- hex SHA-256 of the key; the key itself is never stored
    prefix              TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    last_used_at        TEXT,
    expires_at          TEXT,
    revoked             INTEGER NOT NULL DEFAULT 0,
    allowed_models      TEXT,                             -- JSON array of glob patterns, NULL: no key-level list
    monthly_token_limit INTEGER
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Bumped by triggers whenever users, keys or plans change, from any process; the
-- server polls it to refresh its in-memory credential cache (SPEC §2).
CREATE TABLE change_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO change_counter (id, n) VALUES (1, 0);

CREATE TRIGGER users_changed_ins AFTER INSERT ON users BEGIN UPDATE change_counter SET n = n + 1; END;
CREATE TRIGGER users_changed_upd AFTER UPDATE ON users BEGIN UPDATE change_counter SET n = n + 1; END;
CREATE TRIGGER users_changed_del AFTER DELETE ON users BEGIN UPDATE change_counter SET n = n + 1; END;
CREATE TRIGGER plans_changed_ins AFTER INSERT ON plans BEGIN UPDATE change_counter SET n = n + 1; END;
CREATE TRIGGER plans_changed_upd AFTER UPDATE ON plans BEGIN UPDATE change_counter SET n = n + 1; END;
CREATE TRIGGER plans_changed_del AFTER DELETE ON plans BEGIN UPDATE change_counter SET n = n + 1; END;
CREATE TRIGGER keys_changed_ins AFTER INSERT ON api_keys BEGIN UPDATE change_counter SET n = n + 1; END;
-- last_used_at is written in batches by the server itself and must not trigger a reload.
CREATE TRIGGER keys_changed_upd AFTER UPDATE OF user_id, name, description, key_hash, expires_at, revoked,
    allowed_models, monthly_token_limit ON api_keys BEGIN UPDATE change_counter SET n = n + 1; END;
CREATE TRIGGER keys_changed_del AFTER DELETE ON api_keys BEGIN UPDATE change_counter SET n = n + 1; END;
