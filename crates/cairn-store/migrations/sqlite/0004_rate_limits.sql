-- Rate-limit counters shared by replicas (PostgreSQL deployments; a single SQLite process
-- keeps them in memory). One row per subject ('principal:<account id>' or 'ip:<address>'):
-- the current window, the requests counted in it so far by every replica, and a block.
-- Replicas add their local counts every second or so; rows whose window and block are over
-- are pruned. Timestamps are milliseconds since the Unix epoch.
CREATE TABLE rate_limits (
    subject       TEXT PRIMARY KEY,
    window_start  BIGINT NOT NULL,
    count         BIGINT NOT NULL,
    blocked_until BIGINT,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX rate_limits_updated ON rate_limits(updated_at);
