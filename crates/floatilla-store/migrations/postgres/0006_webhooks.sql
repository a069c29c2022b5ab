-- Webhooks: addresses to which a tenant's events are POSTed. Each webhook keeps a cursor, the
-- time of the newest event it queued, and looks a while behind it for events that committed
-- late; the unique (webhook_id, event_id) of deliveries queues each event once.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    -- The event kinds it wants, as a JSON array of names; empty: every kind.
    event_kinds TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    cursor_at BIGINT NOT NULL
);
CREATE INDEX webhooks_by_tenant ON webhooks (tenant_id, created_at);

-- One event on its way to one webhook. The event's fields are copied, so that every attempt
-- sends the same body even once the event is pruned.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_at BIGINT NOT NULL,
    device_id TEXT,
    message TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- While pending: when the next attempt is due, or, while one is in flight, when its claim
    -- lapses. NULL once delivered or failed.
    next_attempt_at BIGINT,
    created_at BIGINT NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL CHECK (attempt > 0),
    at BIGINT NOT NULL,
    -- The answer's status, or why there was none.
    http_status BIGINT,
    error TEXT,
    PRIMARY KEY (delivery_id, attempt)
);
