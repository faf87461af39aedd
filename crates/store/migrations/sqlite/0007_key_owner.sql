-- A key may belong to a user: it stops when the user is disabled, and never reads above the
-- user's clearance of the moment.
ALTER TABLE api_keys ADD COLUMN user_id TEXT REFERENCES users(id);
