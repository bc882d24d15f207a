-- Settings every replica shares and an administrator changes while the servers run:
-- read-only maintenance mode (name 'maintenance', value: the message shown to clients).
CREATE TABLE server_flags (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
