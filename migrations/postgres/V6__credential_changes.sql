-- A log of changed users, keys and plans, so that a replica applies only the
-- rows that changed to its credential cache instead of reloading everything
-- (SPEC §13). Every changed row takes the next value of change_counter as its
-- sequence number. The counter's row lock is held to the end of the writing
-- transaction, so numbers become visible in order and a replica reading the
-- log from the last number it applied never skips one. Old entries are
-- pruned by the replicas; one that finds a gap reloads fully.
CREATE TABLE credential_changes (
    seq    BIGINT PRIMARY KEY,
    tbl    TEXT NOT NULL CHECK (tbl IN ('users', 'api_keys', 'plans')),
    row_id BIGINT NOT NULL,
    -- The hash a changed or deleted key had, so that a cache finds its entry.
    key_hash TEXT
);

DROP TRIGGER users_changed ON users;
DROP TRIGGER plans_changed ON plans;
DROP TRIGGER keys_changed_ins_del ON api_keys;
DROP TRIGGER keys_changed_upd ON api_keys;

CREATE OR REPLACE FUNCTION tollgate_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s BIGINT;
BEGIN
    UPDATE change_counter SET n = n + 1 WHERE id = 1 RETURNING n INTO s;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO credential_changes (seq, tbl, row_id) VALUES (s, TG_TABLE_NAME, OLD.id);
    ELSE
        INSERT INTO credential_changes (seq, tbl, row_id) VALUES (s, TG_TABLE_NAME, NEW.id);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION tollgate_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s BIGINT;
BEGIN
    UPDATE change_counter SET n = n + 1 WHERE id = 1 RETURNING n INTO s;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO credential_changes (seq, tbl, row_id) VALUES (s, 'api_keys', NEW.id);
    ELSE
        INSERT INTO credential_changes (seq, tbl, row_id, key_hash) VALUES (s, 'api_keys', OLD.id, OLD.key_hash);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION tollgate_changed();
CREATE TRIGGER plans_changed AFTER INSERT OR UPDATE OR DELETE ON plans
    FOR EACH ROW EXECUTE FUNCTION tollgate_changed();
CREATE TRIGGER keys_changed_ins_del AFTER INSERT OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION tollgate_key_changed();
-- last_used_at is written in batches by the servers themselves and is not a change.
CREATE TRIGGER keys_changed_upd AFTER UPDATE OF user_id, name, description, key_hash, expires_at, revoked,
    allowed_models, monthly_token_limit ON api_keys
    FOR EACH ROW EXECUTE FUNCTION tollgate_key_changed();
