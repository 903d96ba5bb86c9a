-- A log of changed users, keys and plans, so that a server applies only the
-- rows that changed to its credential cache instead of reloading everything
-- (SPEC §13). Every change takes the next value of change_counter as its
-- sequence number; a server reads the log from the last number it applied.
-- Old entries are pruned by the servers; one that finds a gap reloads fully.
CREATE TABLE credential_changes (
    seq    INTEGER PRIMARY KEY,
    tbl    TEXT NOT NULL CHECK (tbl IN ('users', 'api_keys', 'plans')),
    row_id INTEGER NOT NULL,
    -- The hash a changed or deleted key had, so that a cache finds its entry.
    key_hash TEXT
);

DROP TRIGGER users_changed_ins;
DROP TRIGGER users_changed_upd;
DROP TRIGGER users_changed_del;
DROP TRIGGER plans_changed_ins;
DROP TRIGGER plans_changed_upd;
DROP TRIGGER plans_changed_del;
DROP TRIGGER keys_changed_ins;
DROP TRIGGER keys_changed_upd;
DROP TRIGGER keys_changed_del;

CREATE TRIGGER users_changed_ins AFTER INSERT ON users BEGIN
    UPDATE change_counter SET n = n + 1;
    INSERT INTO credential_changes (seq, tbl, row_id) SELECT n, 'users', NEW.id FROM change_counter;
END;
CREATE TRIGGER users_changed_upd AFTER UPDATE ON users BEGIN
    UPDATE change_counter SET n = n + 1;
    INSERT INTO credential_changes (seq, tbl, row_id) SELECT n, 'users', NEW.id FROM change_counter;
END;
CREATE TRIGGER users_changed_del AFTER DELETE ON users BEGIN
    UPDATE change_counter SET n = n + 1;
    INSERT INTO credential_changes (seq, tbl, row_id) SELECT n, 'users', OLD.id FROM change_counter;
END;
CREATE TRIGGER plans_changed_ins AFTER INSERT ON plans BEGIN
    UPDATE change_counter SET n = n + 1;
    INSERT INTO credential_changes (seq, tbl, row_id) SELECT n, 'plans', NEW.id FROM change_counter;
END;
CREATE TRIGGER plans_changed_upd AFTER UPDATE ON plans BEGIN
    UPDATE change_counter SET n = n + 1;
    INSERT INTO credential_changes (seq, tbl, row_id) SELECT n, 'plans', NEW.id FROM change_counter;
END;
CREATE TRIGGER plans_changed_del AFTER DELETE ON plans BEGIN
    UPDATE change_counter SET n = n + 1;
    INSERT INTO credential_changes (seq, tbl, row_id) SELECT n, 'plans', OLD.id FROM change_counter;
END;
CREATE TRIGGER keys_changed_ins AFTER INSERT ON api_keys BEGIN
    UPDATE change_counter SET n = n + 1;
    INSERT INTO credential_changes (seq, tbl, row_id) SELECT n, 'api_keys', NEW.id FROM change_counter;
END;
-- last_used_at is written in batches by the server itself and is not a change.
CREATE TRIGGER keys_changed_upd AFTER UPDATE OF user_id, name, description, key_hash, expires_at, revoked,
    allowed_models, monthly_token_limit ON api_keys BEGIN
    UPDATE change_counter SET n = n + 1;
    INSERT INTO credential_changes (seq, tbl, row_id, key_hash)
        SELECT n, 'api_keys', NEW.id, OLD.key_hash FROM change_counter;
END;
CREATE TRIGGER keys_changed_del AFTER DELETE ON api_keys BEGIN
    UPDATE change_counter SET n = n + 1;
    INSERT INTO credential_changes (seq, tbl, row_id, key_hash)
        SELECT n, 'api_keys', OLD.id, OLD.key_hash FROM change_counter;
END;
