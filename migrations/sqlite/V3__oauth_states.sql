-- OAuth sign-ins in progress (SPEC §4): one row per issued `state`, single-use,
-- valid for 10 minutes. Kept in the database so a restart does not break a
-- sign-in the browser is in the middle of.

CREATE TABLE oauth_states (
    state         TEXT PRIMARY KEY,
    provider      TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    redirect_uri  TEXT,                                   -- NULL: hand the token to the web page
    link_user_id  INTEGER REFERENCES users (id) ON DELETE CASCADE,  -- set: link the identity to this user
    browser_hash  TEXT NOT NULL,                          -- hex SHA-256 of the browser-binding cookie
    created_at    TEXT NOT NULL
);
CREATE INDEX oauth_states_created ON oauth_states (created_at);
