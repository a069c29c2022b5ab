-- Console accounts. The provider's people belong to no tenant. E-mail addresses are unique over
-- the installation (stored lower case), so logging in needs no tenant.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    tenant_id TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    email TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin', 'provider')),
    status TEXT NOT NULL CHECK (status IN ('invited', 'needs_approval', 'active', 'disabled')),
    -- argon2 (PHC string); NULL until the person sets a password.
    password_hash TEXT,
    -- While invited: the SHA-256 of the one-time link's secret, and when the link lapses.
    invitation_hash TEXT UNIQUE,
    invitation_expires_at INTEGER,
    created_at INTEGER NOT NULL,
    last_login_at INTEGER
);
CREATE INDEX users_by_tenant ON users (tenant_id, email);

-- Console logins. The cookie holds a secret; only its SHA-256 is kept. Each login has its own
-- CSRF token, which every state-changing form carries.
CREATE TABLE console_sessions (
    secret_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL
);
CREATE INDEX console_sessions_by_user ON console_sessions (user_id);
CREATE INDEX console_sessions_by_use ON console_sessions (last_used_at);

-- Who did what, when, from where, and how it ended. Kept for the installation's audit
-- retention; entries of a deleted tenant go with it.
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    tenant_id TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    at INTEGER NOT NULL,
    actor_kind TEXT NOT NULL CHECK (actor_kind IN ('user', 'token', 'anonymous')),
    actor_id TEXT,
    actor_name TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    address TEXT,
    status INTEGER NOT NULL,
    error TEXT
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id);
CREATE INDEX audit_log_by_time ON audit_log (at);
