-- Warnings sent ahead of a capacity drop: one per tenant, drop instant and window (days before),
-- whichever node notices first.
CREATE TABLE license_notices (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    drop_at INTEGER NOT NULL,
    window_days INTEGER NOT NULL CHECK (window_days > 0),
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, drop_at, window_days)
);
