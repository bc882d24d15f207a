-- Evaluation jobs (docs/GOVERNANCE.md#evaluation-jobs): a suite to run on a version, queued
-- when the version is submitted (for the namespace's required suites that name a harness) or
-- by hand, claimed by `cairn eval worker` under a lease, and retried up to max_attempts.
-- At most one job per version and suite is queued or running at a time.
CREATE TABLE eval_jobs (
    id           TEXT PRIMARY KEY,
    version_id   BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    namespace_id BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    suite        TEXT NOT NULL,
    priority     BIGINT NOT NULL DEFAULT 0,
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts     BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    -- A job that failed waits until then before it is claimed again (ms).
    not_before   BIGINT NOT NULL,
    -- The worker (its name, and the account it runs as) that holds the job, until when.
    worker       TEXT,
    claimed_by   TEXT,
    lease_until  BIGINT,
    error        TEXT NOT NULL DEFAULT '',
    result_id    TEXT,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    updated_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE UNIQUE INDEX eval_jobs_active ON eval_jobs(version_id, suite) WHERE state IN ('queued', 'running');
CREATE INDEX eval_jobs_queue ON eval_jobs(state, priority, created_at);
CREATE INDEX eval_jobs_version ON eval_jobs(version_id, created_at);

-- The evaluator role: workers that run evaluation jobs read the namespace's models and submit
-- the results of the jobs they claim, and nothing more.
ALTER TABLE role_grants DROP CONSTRAINT role_grants_role_check;
ALTER TABLE role_grants ADD CONSTRAINT role_grants_role_check
    CHECK (role IN ('viewer', 'model_owner', 'mrc', 'security', 'sre', 'auditor', 'admin', 'evaluator'));
