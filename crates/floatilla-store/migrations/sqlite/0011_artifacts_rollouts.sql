-- Artifacts: the files jobs install. Their bytes live in the database in chunks, so every node
-- serves every artifact and a download resumes at any byte without reading the whole file.
CREATE TABLE artifacts (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    -- The router models it is for, a JSON array; empty: any model.
    models TEXT NOT NULL,
    -- Both NULL while the upload is under way.
    size BIGINT,
    sha256 TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, kind, name, version)
);

CREATE TABLE artifact_chunks (
    artifact_id TEXT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
    -- From 0; every chunk but the last holds exactly the chunk size.
    seq BIGINT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (artifact_id, seq)
);

-- An artifact a job carries cannot be deleted while the job exists. Artifacts never change, so
-- the job keeps what its routers are told of it (name, version, size, digest) beside the id.
ALTER TABLE jobs ADD COLUMN artifact_id TEXT REFERENCES artifacts (id);
ALTER TABLE jobs ADD COLUMN artifact_name TEXT;
ALTER TABLE jobs ADD COLUMN artifact_version TEXT;
ALTER TABLE jobs ADD COLUMN artifact_size BIGINT;
ALTER TABLE jobs ADD COLUMN artifact_sha256 TEXT;

-- When an execution may be sent: at creation for a plain job; for a rollout's, when the rollout
-- lets it start (plus its jitter); NULL until then.
ALTER TABLE job_executions ADD COLUMN release_at BIGINT;
-- A rollout's order of routers and the phase each belongs to.
ALTER TABLE job_executions ADD COLUMN position BIGINT NOT NULL DEFAULT 0;
ALTER TABLE job_executions ADD COLUMN phase BIGINT NOT NULL DEFAULT 0;
UPDATE job_executions SET release_at = created_at;
CREATE INDEX job_executions_by_phase ON job_executions (job_id, phase, state);

-- A rollout is a job sent in phases; it shares the job's id.
CREATE TABLE rollouts (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Phases, concurrency and thresholds, as JSON.
    policy TEXT NOT NULL,
    status TEXT NOT NULL,
    phase BIGINT NOT NULL,
    -- Routers at creation: what percentages of phases are taken of.
    planned BIGINT NOT NULL,
    -- The group or tag whose later members join the last phase; both NULL for a list of routers.
    target_group_id TEXT,
    target_tag TEXT,
    jitter_secs BIGINT NOT NULL,
    max_retries BIGINT NOT NULL,
    -- Why it paused, aborted or completed.
    reason TEXT,
    -- The node that drives it until lease_until; another takes over once that passed.
    lease_node TEXT,
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX rollouts_by_tenant ON rollouts (tenant_id, job_id);
CREATE INDEX rollouts_by_status ON rollouts (status);

-- A daily window ("02:00-04:00 Europe/Berlin") outside which rollouts leave the group's routers alone.
ALTER TABLE groups ADD COLUMN maintenance_window TEXT;
