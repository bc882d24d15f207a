-- Identity and access: role grants, login sessions, MFA, lockouts, richer API keys.
-- Timestamps are milliseconds since the Unix epoch.

-- Who may do what, globally (namespace_id NULL) or in one namespace. Deleting a namespace
-- removes its grants, so a namespace created later under the same name starts empty.
CREATE TABLE role_grants (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'model_owner', 'mrc', 'security', 'sre', 'auditor', 'admin')),
    namespace_id INTEGER REFERENCES namespaces(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL
);
CREATE UNIQUE INDEX role_grants_global ON role_grants(user_id, role) WHERE namespace_id IS NULL;
CREATE UNIQUE INDEX role_grants_namespaced ON role_grants(user_id, role, namespace_id) WHERE namespace_id IS NOT NULL;
CREATE INDEX role_grants_namespace ON role_grants(namespace_id);

-- Administrators become holders of the global admin role.
INSERT INTO role_grants (id, user_id, role, namespace_id, created_at, created_by)
    SELECT 'grant-' || id, id, 'admin', NULL, created_at, 'system' FROM users WHERE is_admin = 1;

ALTER TABLE users DROP COLUMN is_admin;

-- Persons: MFA state, and a slot for an external identity (single sign-on later).
ALTER TABLE users ADD COLUMN totp_secret TEXT;
ALTER TABLE users ADD COLUMN totp_pending_secret TEXT;
ALTER TABLE users ADD COLUMN totp_enabled_at INTEGER;
ALTER TABLE users ADD COLUMN totp_last_step INTEGER;
ALTER TABLE users ADD COLUMN password_changed_at INTEGER;
ALTER TABLE users ADD COLUMN external_issuer TEXT;
ALTER TABLE users ADD COLUMN external_subject TEXT;
CREATE UNIQUE INDEX users_external ON users(external_issuer, external_subject) WHERE external_subject IS NOT NULL;

-- Single-use MFA recovery codes, stored hashed.
CREATE TABLE recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER,
    PRIMARY KEY (user_id, code_hash)
);

-- Login sessions (web UI, `cairn login --password`). Only the SHA-256 of the session id
-- is stored. mfa_verified: the second factor was given in this session.
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    mfa_verified INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    source_ip    TEXT,
    user_agent   TEXT
);
CREATE INDEX sessions_user ON sessions(user_id);

-- Failed logins and MFA codes, per subject ('user:<name>' whether or not the account
-- exists, and 'ip:<address>'), and the lockouts they caused.
CREATE TABLE auth_failures (
    subject      TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL DEFAULT 0,
    first_at     INTEGER NOT NULL,
    last_at      INTEGER NOT NULL,
    locked_until INTEGER
);

-- API keys: restriction to namespaces (space-separated names, empty = all the owner may
-- reach), where they were last used from, rotation, and the bootstrap key's mark.
ALTER TABLE api_keys ADD COLUMN namespaces TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN last_used_ip TEXT;
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
ALTER TABLE api_keys ADD COLUMN bootstrap INTEGER NOT NULL DEFAULT 0;
