-- The provider of a cloud service: its API tokens belong to no tenant, it suspends tenants,
-- and it issues activation codes that tenants redeem for licenses.

-- A provider token has no tenant; every other token has one. SQLite cannot loosen a column's
-- NOT NULL in place, so the table is rebuilt.
CREATE TABLE api_tokens_rebuilt (
    id TEXT PRIMARY KEY,
    tenant_id TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin', 'provider')),
    secret_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    CHECK ((role = 'provider') = (tenant_id IS NULL))
);
INSERT INTO api_tokens_rebuilt (id, tenant_id, name, role, secret_hash, created_at, revoked_at)
    SELECT id, tenant_id, name, role, secret_hash, created_at, revoked_at FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_rebuilt RENAME TO api_tokens;
CREATE INDEX api_tokens_by_tenant ON api_tokens (tenant_id, created_at);

ALTER TABLE tenants ADD COLUMN suspended_at BIGINT;
ALTER TABLE tenants ADD COLUMN contact_email TEXT;

-- Codes are kept as issued (canonical form): the provider lists and resells them. Whoever can
-- read this table can also write licenses, so hashing them would protect nothing.
CREATE TABLE activation_codes (
    code TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL,
    seats BIGINT NOT NULL CHECK (seats > 0),
    term_months BIGINT NOT NULL CHECK (term_months > 0),
    created_at BIGINT NOT NULL,
    redeemed_at BIGINT,
    -- Kept when the tenant is deleted: a redeemed code stays redeemed.
    redeemed_by TEXT REFERENCES tenants (id) ON DELETE SET NULL,
    license_id TEXT
);
CREATE INDEX activation_codes_by_creation ON activation_codes (created_at, code);
CREATE INDEX activation_codes_by_batch ON activation_codes (batch_id);
