-- The knowledge-base catalog on PostgreSQL, shared by every server of the platform: the same
-- tables as the SQLite catalog (migrations/0001) in PostgreSQL's types. Indexes (full text,
-- vectors) stay on each server and follow the catalog.
CREATE TABLE knowledge_bases (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL,
    max_label     TEXT NOT NULL,
    default_label TEXT,
    created       BIGINT NOT NULL,
    UNIQUE (tenant, name)
);

CREATE TABLE documents (
    id          TEXT PRIMARY KEY,
    kb          TEXT NOT NULL REFERENCES knowledge_bases (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    format      TEXT NOT NULL,
    label       TEXT NOT NULL,
    given_label TEXT,
    status      TEXT NOT NULL,
    error       TEXT,
    text        TEXT NOT NULL,
    pages       TEXT NOT NULL DEFAULT '[]',
    sha256      TEXT NOT NULL,
    bytes       BIGINT NOT NULL,
    chunks      BIGINT NOT NULL DEFAULT 0,
    uploader    TEXT NOT NULL,
    created     BIGINT NOT NULL,
    updated     BIGINT NOT NULL
);
CREATE INDEX documents_by_status ON documents (status, created);
CREATE INDEX documents_by_kb ON documents (kb, created);

CREATE TABLE chunks (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kb       TEXT NOT NULL,
    document TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ord      BIGINT NOT NULL,
    label    TEXT NOT NULL,
    text     TEXT NOT NULL,
    page     BIGINT,
    start    BIGINT NOT NULL,
    "end"    BIGINT NOT NULL,
    vector   BYTEA NOT NULL,
    UNIQUE (document, ord)
);
CREATE INDEX chunks_by_kb ON chunks (kb, id);
