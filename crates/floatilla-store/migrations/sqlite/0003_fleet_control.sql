-- Enrollment under control, the event log, timer profiles per group and the nodes of a cluster
-- (a single SQLite node records itself too, so both backends share the queries).

ALTER TABLE tenants ADD COLUMN enrollment_policy TEXT NOT NULL DEFAULT 'open'
    CHECK (enrollment_policy IN ('open', 'approval', 'preregistered'));

-- Routers enrolled before this migration were admitted.
ALTER TABLE devices ADD COLUMN enrollment TEXT NOT NULL DEFAULT 'accepted'
    CHECK (enrollment IN ('preregistered', 'pending', 'accepted', 'rejected'));
-- Approval queues: a tenant's pending routers, in serial order.
CREATE INDEX devices_by_enrollment ON devices (tenant_id, enrollment, serial);

-- A group's heartbeat timing; both or neither are set.
ALTER TABLE groups ADD COLUMN ping_interval_secs INTEGER CHECK (ping_interval_secs > 0);
ALTER TABLE groups ADD COLUMN pong_timeout_secs INTEGER CHECK (
    pong_timeout_secs > 0 AND (ping_interval_secs IS NULL) = (pong_timeout_secs IS NULL)
);

-- Events keep the id of the router they are about, without a foreign key, so that deleting the
-- router does not delete what happened to it.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    device_id TEXT,
    message TEXT NOT NULL
);
-- Listings go newest first by (at, id); a severity filter becomes a filter on kinds.
CREATE INDEX events_by_tenant ON events (tenant_id, at, id);
CREATE INDEX events_by_kind ON events (tenant_id, kind, at, id);
CREATE INDEX events_by_device ON events (device_id, kind, at, id) WHERE device_id IS NOT NULL;
CREATE INDEX events_by_time ON events (at);

-- A connect ends the device's other open sessions: found without reading its whole history.
CREATE INDEX connection_history_open_by_device ON connection_history (device_id)
    WHERE disconnected_at IS NULL;

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    heartbeat_at INTEGER NOT NULL
);
