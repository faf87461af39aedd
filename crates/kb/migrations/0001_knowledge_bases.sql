-- Knowledge bases, their documents, and the chunks the indexes are built from. This database is
-- the source of truth: the full-text and vector indexes are rebuilt from it when they disagree.
CREATE TABLE knowledge_bases (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL,
    max_label     TEXT NOT NULL,
    default_label TEXT,
    created       INTEGER NOT NULL,
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
    bytes       INTEGER NOT NULL,
    chunks      INTEGER NOT NULL DEFAULT 0,
    uploader    TEXT NOT NULL,
    created     INTEGER NOT NULL,
    updated     INTEGER NOT NULL
);
CREATE INDEX documents_by_status ON documents (status, created);
CREATE INDEX documents_by_kb ON documents (kb, created);

CREATE TABLE chunks (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    kb       TEXT NOT NULL,
    document TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ord      INTEGER NOT NULL,
    label    TEXT NOT NULL,
    text     TEXT NOT NULL,
    page     INTEGER,
    start    INTEGER NOT NULL,
    "end"    INTEGER NOT NULL,
    vector   BLOB NOT NULL,
    UNIQUE (document, ord)
);
CREATE INDEX chunks_by_kb ON chunks (kb);
