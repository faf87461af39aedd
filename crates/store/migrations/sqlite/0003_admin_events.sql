-- Administrative actions waiting to enter the audit log. The CLI writes them here (it may run while
-- the server owns the log); the server appends each to the log and marks it. Rows are never
-- deleted: `logged_at` says when the log took it.
CREATE TABLE admin_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    operation   TEXT NOT NULL,
    tenant      TEXT,
    key_id      TEXT,
    detail      TEXT NOT NULL,
    logged_at   INTEGER
);

CREATE INDEX admin_events_pending ON admin_events(logged_at) WHERE logged_at IS NULL;
