-- Evaluation jobs (docs/GOVERNANCE.md#evaluation-jobs): a suite to run on a version, queued
-- when the version is submitted (for the namespace's required suites that name a harness) or
-- by hand, claimed by `cairn eval worker` under a lease, and retried up to max_attempts.
-- At most one job per version and suite is queued or running at a time.
CREATE TABLE eval_jobs (
    id           TEXT PRIMARY KEY,
    version_id   INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    namespace_id INTEGER NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    suite        TEXT NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    -- A job that failed waits until then before it is claimed again (ms).
    not_before   INTEGER NOT NULL,
    -- The worker (its name, and the account it runs as) that holds the job, until when.
    worker       TEXT,
    claimed_by   TEXT,
    lease_until  INTEGER,
    error        TEXT NOT NULL DEFAULT '',
    result_id    TEXT,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE UNIQUE INDEX eval_jobs_active ON eval_jobs(version_id, suite) WHERE state IN ('queued', 'running');
CREATE INDEX eval_jobs_queue ON eval_jobs(state, priority, created_at);
CREATE INDEX eval_jobs_version ON eval_jobs(version_id, created_at);

-- The evaluator role: workers that run evaluation jobs read the namespace's models and submit
-- the results of the jobs they claim, and nothing more. SQLite cannot change a CHECK
-- constraint in place, so the (childless) grants table is rebuilt.
CREATE TABLE role_grants_new (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'model_owner', 'mrc', 'security', 'sre', 'auditor', 'admin', 'evaluator')),
    namespace_id INTEGER REFERENCES namespaces(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL
);
INSERT INTO role_grants_new (id, user_id, role, namespace_id, created_at, created_by)
    SELECT id, user_id, role, namespace_id, created_at, created_by FROM role_grants;
DROP TABLE role_grants;
ALTER TABLE role_grants_new RENAME TO role_grants;
CREATE UNIQUE INDEX role_grants_global ON role_grants(user_id, role) WHERE namespace_id IS NULL;
CREATE UNIQUE INDEX role_grants_namespaced ON role_grants(user_id, role, namespace_id) WHERE namespace_id IS NOT NULL;
CREATE INDEX role_grants_namespace ON role_grants(namespace_id);
