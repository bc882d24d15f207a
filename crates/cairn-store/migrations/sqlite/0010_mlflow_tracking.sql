-- MLflow tracking objects (docs/MLFLOW.md): experiments, runs with their params, metrics,
-- tags and inputs, MLflow 3 logged models, and the proxied artifact tree
-- (`mlflow-artifacts:/…`), whose files are blobs of the blob store. Every experiment belongs
-- to a Cairn namespace, which decides who may read and write it and everything under it.

CREATE TABLE mlflow_experiments (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    namespace         TEXT NOT NULL,
    artifact_location TEXT NOT NULL,
    lifecycle_stage   TEXT NOT NULL DEFAULT 'active',
    created_at        INTEGER NOT NULL,
    created_by        TEXT NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX mlflow_experiments_namespace ON mlflow_experiments(namespace);

CREATE TABLE mlflow_experiment_tags (
    experiment_id INTEGER NOT NULL REFERENCES mlflow_experiments(id) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    PRIMARY KEY (experiment_id, key)
);

CREATE TABLE mlflow_runs (
    id              TEXT PRIMARY KEY,
    experiment_id   INTEGER NOT NULL REFERENCES mlflow_experiments(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    status          TEXT NOT NULL,
    start_time      INTEGER NOT NULL,
    end_time        INTEGER,
    lifecycle_stage TEXT NOT NULL DEFAULT 'active',
    artifact_uri    TEXT NOT NULL,
    created_by      TEXT NOT NULL
);
CREATE INDEX mlflow_runs_experiment ON mlflow_runs(experiment_id, start_time);

CREATE TABLE mlflow_params (
    run_id TEXT NOT NULL REFERENCES mlflow_runs(id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

-- Every logged value (the history); `mlflow_latest_metrics` keeps the latest per key.
CREATE TABLE mlflow_metrics (
    run_id    TEXT NOT NULL REFERENCES mlflow_runs(id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     REAL NOT NULL,
    timestamp INTEGER NOT NULL,
    step      INTEGER NOT NULL,
    model_id  TEXT
);
CREATE INDEX mlflow_metrics_run_key ON mlflow_metrics(run_id, key, step);

CREATE TABLE mlflow_latest_metrics (
    run_id    TEXT NOT NULL REFERENCES mlflow_runs(id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     REAL NOT NULL,
    timestamp INTEGER NOT NULL,
    step      INTEGER NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE mlflow_run_tags (
    run_id TEXT NOT NULL REFERENCES mlflow_runs(id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

-- Dataset inputs, as the client sent them (JSON of MLflow's DatasetInput).
CREATE TABLE mlflow_run_inputs (
    run_id   TEXT NOT NULL REFERENCES mlflow_runs(id) ON DELETE CASCADE,
    digest   TEXT NOT NULL,
    name     TEXT NOT NULL,
    input    TEXT NOT NULL,
    PRIMARY KEY (run_id, name, digest)
);

CREATE TABLE mlflow_logged_models (
    id                TEXT PRIMARY KEY,
    experiment_id     INTEGER NOT NULL REFERENCES mlflow_experiments(id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    artifact_location TEXT NOT NULL,
    status            TEXT NOT NULL,
    status_message    TEXT NOT NULL DEFAULT '',
    model_type        TEXT NOT NULL DEFAULT '',
    source_run_id     TEXT NOT NULL DEFAULT '',
    created_at        INTEGER NOT NULL,
    created_by        TEXT NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX mlflow_logged_models_experiment ON mlflow_logged_models(experiment_id, created_at);

CREATE TABLE mlflow_logged_model_tags (
    model_id TEXT NOT NULL REFERENCES mlflow_logged_models(id) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

CREATE TABLE mlflow_logged_model_params (
    model_id TEXT NOT NULL REFERENCES mlflow_logged_models(id) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

-- The proxied artifact tree: one row per file, keyed by its normalised path (its first
-- segment is the experiment id); the bytes are the blob `digest`.
CREATE TABLE mlflow_artifacts (
    path       TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX mlflow_artifacts_digest ON mlflow_artifacts(digest);

-- MLflow's `Default` experiment (id 0) is where runs go when no experiment is named; it
-- belongs to the namespace `default`.
INSERT INTO mlflow_experiments (id, name, namespace, artifact_location, lifecycle_stage, created_at, created_by, updated_at)
VALUES (0, 'Default', 'default', 'mlflow-artifacts:/0', 'active', 0, 'system', 0);
