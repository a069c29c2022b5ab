-- Management tasks: a job for some routers, and each router's execution of it.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    -- The job's parameters, a JSON object handed to the router as they are.
    params TEXT NOT NULL,
    expires_at BIGINT,
    timeout_secs BIGINT NOT NULL CHECK (timeout_secs > 0),
    expected_downtime_secs BIGINT NOT NULL CHECK (expected_downtime_secs >= 0),
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    cancelled_at BIGINT
);
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, created_at, id);

CREATE TABLE job_executions (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Kept when the router is deleted: the job's history stays whole.
    device_id TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    attempt BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    sent_at BIGINT,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT,
    UNIQUE (job_id, device_id)
);
CREATE INDEX job_executions_by_device ON job_executions (device_id, state);
CREATE INDEX job_executions_by_job ON job_executions (job_id, state);
CREATE INDEX job_executions_open ON job_executions (state, updated_at)
    WHERE state IN ('queued', 'waiting_for_license', 'waiting_for_window', 'sent', 'downloading', 'installing');
