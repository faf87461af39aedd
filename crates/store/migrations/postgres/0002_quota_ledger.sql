-- The quota ledger every server shares (enclave_quota's counters per scope, and the
-- reservations not yet settled). A request is admitted in one transaction that locks its
-- scopes' rows, checks every limit and counts it in, so servers together admit exactly what
-- one would. A reservation a dead server never settled is reclaimed after `expires_at`,
-- charged in full.
CREATE TABLE quota_counters (
    scope          TEXT PRIMARY KEY,
    minute         BIGINT NOT NULL,
    requests_prev  BIGINT NOT NULL,
    requests_cur   BIGINT NOT NULL,
    tokens_prev    BIGINT NOT NULL,
    tokens_cur     BIGINT NOT NULL,
    month          BIGINT NOT NULL,
    month_tokens   BIGINT NOT NULL,
    inflight       BIGINT NOT NULL
);

CREATE TABLE quota_reservations (
    id          TEXT PRIMARY KEY,
    scopes      TEXT[] NOT NULL,
    tokens      BIGINT NOT NULL,
    minute      BIGINT NOT NULL,
    month       BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE INDEX quota_reservations_expiry ON quota_reservations(expires_at);
