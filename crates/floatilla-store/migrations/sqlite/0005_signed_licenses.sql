-- Signed license files: what each says beyond its term, and the file itself, kept as installed.
-- Unsigned licenses (tests, demos) have none of it.

ALTER TABLE licenses ADD COLUMN serial TEXT;
ALTER TABLE licenses ADD COLUMN customer TEXT;
ALTER TABLE licenses ADD COLUMN issued_at INTEGER;
-- JSON arrays of strings.
ALTER TABLE licenses ADD COLUMN supersedes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE licenses ADD COLUMN entitlements TEXT NOT NULL DEFAULT '[]';
ALTER TABLE licenses ADD COLUMN issuer_key_id TEXT;
ALTER TABLE licenses ADD COLUMN signed_text TEXT;
-- A serial is installed once per tenant.
CREATE UNIQUE INDEX licenses_by_serial ON licenses (tenant_id, serial) WHERE serial IS NOT NULL;
