-- Deployments (docs/DEPLOYMENTS.md): environments with their service-level objectives, the
-- deployment records deployment tooling writes (which version runs where, how it was rolled
-- out, with what configuration, and how it went), and the SLO reports monitoring posts.
-- A rollback is a deployment record too (rollback_of names the one it replaced).
CREATE TABLE environments (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    description   TEXT NOT NULL DEFAULT '',
    -- Only versions in approved_prod or production, with a valid server signature.
    production    INTEGER NOT NULL DEFAULT 0,
    -- JSON: max_error_rate, max_latency_p95_ms, max_drift_score.
    slo           TEXT NOT NULL DEFAULT '{}',
    auto_rollback INTEGER NOT NULL DEFAULT 1,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    updated_by    TEXT NOT NULL
);

CREATE TABLE deployments (
    id              INTEGER PRIMARY KEY,
    environment_id  INTEGER NOT NULL REFERENCES environments(id),
    model_id        INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    version_id      INTEGER REFERENCES versions(id) ON DELETE SET NULL,
    -- The version number, kept if the version is deleted.
    number          INTEGER NOT NULL,
    strategy        TEXT NOT NULL CHECK (strategy IN ('direct', 'canary', 'blue_green')),
    traffic_percent INTEGER NOT NULL CHECK (traffic_percent BETWEEN 1 AND 100),
    config          TEXT NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL CHECK (status IN ('pending', 'in_progress', 'succeeded', 'failed', 'rolled_back', 'superseded')),
    reason          TEXT NOT NULL DEFAULT '',
    rollback_of     INTEGER REFERENCES deployments(id),
    created_at      INTEGER NOT NULL,
    created_by      TEXT NOT NULL,
    updated_at      INTEGER NOT NULL,
    updated_by      TEXT NOT NULL
);
CREATE INDEX deployments_history ON deployments(environment_id, model_id, id);
CREATE INDEX deployments_model ON deployments(model_id, id);

CREATE TABLE slo_reports (
    id            INTEGER PRIMARY KEY,
    deployment_id INTEGER NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    measured      TEXT NOT NULL,
    breaches      TEXT NOT NULL DEFAULT '[]',
    reported_at   INTEGER NOT NULL,
    reported_by   TEXT NOT NULL
);
CREATE INDEX slo_reports_deployment ON slo_reports(deployment_id, id);
