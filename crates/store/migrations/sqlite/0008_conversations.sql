-- Conversations kept for the person (or key) that had them. `label` is the banner of the highest
-- label any of its messages reached: it only ever rises, and a reader whose clearance no longer
-- dominates it does not see the conversation at all.
CREATE TABLE conversations (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    owner       TEXT NOT NULL,
    title       TEXT NOT NULL,
    label       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE INDEX conversations_owner ON conversations(tenant_id, owner, updated_at);

-- Each message with the label it was sent or answered at; `citations` is the JSON array of the
-- passages an answer was grounded in.
CREATE TABLE conversation_messages (
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    role            TEXT NOT NULL,
    content         TEXT NOT NULL,
    label           TEXT NOT NULL,
    citations       TEXT,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
