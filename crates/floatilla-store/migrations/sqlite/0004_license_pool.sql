-- The floating license pool. Each tenant's pool is a log of operations (license_log) applied
-- in order under the lock of the tenant's row in license_pools; the columns below on devices
-- hold the result after the last operation, so a node can rebuild the pool from them and then
-- follow the log. Service times (linger_until) are milliseconds of wall-clock time less every
-- outage recorded in service_clock.

ALTER TABLE devices ADD COLUMN managed INTEGER NOT NULL DEFAULT 1 CHECK (managed IN (0, 1));
ALTER TABLE devices ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1));
ALTER TABLE devices ADD COLUMN license_state TEXT NOT NULL DEFAULT 'inactive'
    CHECK (license_state IN ('licensed', 'excess', 'inactive', 'unmanaged'));
-- The reason of the router's last transition; NULL before its first.
ALTER TABLE devices ADD COLUMN license_reason TEXT;
-- The place in line of the router's live session, NULL without one.
ALTER TABLE devices ADD COLUMN license_place INTEGER;
-- The connection that opened or last continued the live session.
ALTER TABLE devices ADD COLUMN license_session TEXT;
-- Set while the session lingers after its connection dropped: when the linger ends.
ALTER TABLE devices ADD COLUMN linger_until INTEGER;
CREATE INDEX devices_by_license_state ON devices (tenant_id, license_state, serial);
-- Rebuilding a pool reads the routers with a live session or a setting of their own.
CREATE INDEX devices_in_pool ON devices (tenant_id)
    WHERE license_place IS NOT NULL OR NOT managed OR pinned;

-- Licenses granting seats. seats NULL is an unlimited license; not_after NULL a permanent one.
CREATE TABLE licenses (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    seats INTEGER CHECK (seats >= 0),
    not_before INTEGER NOT NULL,
    not_after INTEGER CHECK (not_after > not_before),
    grace_until INTEGER CHECK (grace_until >= not_after),
    created_at INTEGER NOT NULL
);
CREATE INDEX licenses_by_tenant ON licenses (tenant_id, not_before);

-- One row per tenant: the lock every change of its pool takes, and the pool's head.
CREATE TABLE license_pools (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    -- The position of the last operation applied.
    version INTEGER NOT NULL CHECK (version >= 0),
    next_place INTEGER NOT NULL CHECK (next_place > 0),
    -- The capacity applied last (NULL: unlimited).
    capacity INTEGER CHECK (capacity >= 0),
    -- Bumped by every change to the tenant's licenses, so nodes know to reread them.
    licenses_revision INTEGER NOT NULL DEFAULT 0,
    -- The counts after the last operation, and since when: usage accrues from them.
    usage_at INTEGER,
    usage_managed INTEGER NOT NULL DEFAULT 0,
    usage_licensed INTEGER NOT NULL DEFAULT 0,
    usage_excess INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE license_log (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    -- The operation as JSON (floatilla_domain::licensing::PoolOp).
    op TEXT NOT NULL,
    PRIMARY KEY (tenant_id, position)
);

-- Usage per hour and per day (UTC), for true-ups and audits.
CREATE TABLE license_usage (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    granularity TEXT NOT NULL CHECK (granularity IN ('hour', 'day')),
    bucket_start INTEGER NOT NULL,
    peak_managed INTEGER NOT NULL,
    peak_licensed INTEGER NOT NULL,
    excess_router_millis INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, granularity, bucket_start)
);

-- Time that counts against lingers: wall-clock time less the outages, when no node ran.
CREATE TABLE service_clock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    downtime_ms INTEGER NOT NULL CHECK (downtime_ms >= 0),
    -- The last time any node said it was running.
    alive_at INTEGER NOT NULL
);
