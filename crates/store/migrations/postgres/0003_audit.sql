-- The platform's one audit log: every server's records in one sequence. A batch is appended in
-- one transaction that locks the head row, takes the indices after its size, and moves it on,
-- so indices are contiguous whatever server writes or dies when; a record is acknowledged
-- only after its transaction commits. `public_key` is the verifier key every server's
-- checkpoints must be signed with (the first server to start records it).
CREATE TABLE audit_head (
    one         BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    size        BIGINT NOT NULL,
    public_key  TEXT
);

INSERT INTO audit_head (one, size) VALUES (TRUE, 0);

CREATE TABLE audit_records (
    idx   BIGINT PRIMARY KEY,
    body  BYTEA NOT NULL
);
