-- OAuth sign-ins in progress (SPEC §4), as migrations/sqlite/V3.

CREATE TABLE oauth_states (
    state         TEXT PRIMARY KEY,
    provider      TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    redirect_uri  TEXT,
    link_user_id  BIGINT REFERENCES users (id) ON DELETE CASCADE,
    browser_hash  TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX oauth_states_created ON oauth_states (created_at);
