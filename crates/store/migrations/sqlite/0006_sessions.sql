-- Browser sessions made by an OpenID Connect sign-in. The cookie's value is never stored: `id` is
-- its SHA-256, so a copy of this file does not give anyone a live session.
CREATE TABLE sessions (
    id          BLOB PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users(id),
    issuer      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    end_reason  TEXT
);

CREATE INDEX sessions_user ON sessions(user_id);
