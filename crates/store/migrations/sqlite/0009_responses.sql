-- Responses (`POST /v1/responses` with `store`), per tenant, at the label their answer reached:
-- `context` is every item the model saw and wrote (what a `previous_response_id` continues),
-- `input` the items this request sent, `body` the response object as the API answered it.
CREATE TABLE responses (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    key_id      TEXT NOT NULL,
    label       TEXT NOT NULL,
    context     TEXT NOT NULL,
    input       TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE INDEX responses_tenant ON responses(tenant_id, created_at);
