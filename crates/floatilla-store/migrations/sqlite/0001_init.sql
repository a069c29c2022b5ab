-- Floatilla's first schema (SQLite). Ids are UUID text; timestamps are BIGINT milliseconds since
-- the Unix epoch (UTC). Kept in step with migrations/postgres/0001_init.sql, which differs only
-- where the dialects do.

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE groups (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE enrollment_tokens (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    max_uses BIGINT CHECK (max_uses >= 0),
    uses BIGINT NOT NULL CHECK (uses >= 0),
    expires_at BIGINT,
    group_id TEXT REFERENCES groups (id) ON DELETE SET NULL,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX enrollment_tokens_by_tenant ON enrollment_tokens (tenant_id, created_at);
-- Lets deleting a group find its tokens without a scan.
CREATE INDEX enrollment_tokens_by_group ON enrollment_tokens (group_id);

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    serial TEXT NOT NULL,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    firmware TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    group_id TEXT REFERENCES groups (id) ON DELETE SET NULL,
    connection_state TEXT NOT NULL CHECK (connection_state IN ('online', 'offline')),
    -- The session that owns connection_state: only its disconnect may take the device offline.
    current_session_id TEXT,
    connected_since BIGINT,
    last_seen BIGINT,
    last_disconnect_at BIGINT,
    last_disconnect_reason TEXT,
    -- JSON of the domain's DeviceStatus.
    status TEXT NOT NULL,
    reenroll_allowed_until BIGINT,
    created_at BIGINT NOT NULL,
    -- Also the index behind fleet listings: ordered by serial, keyset-paginated on it.
    UNIQUE (tenant_id, serial)
);
-- Fleet listings filtered by state or by group, in serial order. A group belongs to one tenant,
-- so the group index needs no tenant column; it also serves ON DELETE SET NULL.
CREATE INDEX devices_by_state ON devices (tenant_id, connection_state, serial);
CREATE INDEX devices_by_group ON devices (group_id, serial);
-- Taking offline the devices whose sessions a stopped node left open.
CREATE INDEX devices_by_session ON devices (current_session_id)
    WHERE current_session_id IS NOT NULL;

CREATE TABLE credentials (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX credentials_by_device ON credentials (device_id);

CREATE TABLE connection_history (
    session_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    node_id TEXT NOT NULL,
    remote_addr TEXT NOT NULL,
    connected_at BIGINT NOT NULL,
    disconnected_at BIGINT,
    reason TEXT
);
CREATE INDEX connection_history_by_device ON connection_history (device_id, connected_at);
-- Only open sessions are looked up by node (when a node's sessions are closed after it stopped).
CREATE INDEX connection_history_open_by_node ON connection_history (node_id)
    WHERE disconnected_at IS NULL;

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    secret_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_tokens_by_tenant ON api_tokens (tenant_id, created_at);
