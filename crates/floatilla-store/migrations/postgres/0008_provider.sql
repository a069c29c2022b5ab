-- The provider of a cloud service: its API tokens belong to no tenant, it suspends tenants,
-- and it issues activation codes that tenants redeem for licenses.

-- A provider token has no tenant; every other token has one.
ALTER TABLE api_tokens ALTER COLUMN tenant_id DROP NOT NULL;
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_role_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check
    CHECK (role IN ('viewer', 'operator', 'admin', 'provider'));
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_provider_has_no_tenant
    CHECK ((role = 'provider') = (tenant_id IS NULL));

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
