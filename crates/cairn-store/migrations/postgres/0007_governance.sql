-- Governance (docs/GOVERNANCE.md): owners and risk tiers of models; semantic version labels,
-- lineage references and the lifecycle stage of versions; the transitions, approvals, policy
-- results and exceptions that move a version; the card and evaluation results attached to
-- it; and webhooks with their delivery log.
ALTER TABLE models ADD COLUMN risk_tier TEXT NOT NULL DEFAULT 'low' CHECK (risk_tier IN ('low', 'medium', 'high'));
ALTER TABLE models ADD COLUMN team TEXT NOT NULL DEFAULT '';

CREATE TABLE model_owners (
    model_id BIGINT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    PRIMARY KEY (model_id, username)
);

ALTER TABLE versions ADD COLUMN semver TEXT;
ALTER TABLE versions ADD COLUMN semver_key TEXT;
ALTER TABLE versions ADD COLUMN code_commit TEXT NOT NULL DEFAULT '';
ALTER TABLE versions ADD COLUMN training_job TEXT NOT NULL DEFAULT '';
ALTER TABLE versions ADD COLUMN stage TEXT NOT NULL DEFAULT 'draft';
ALTER TABLE versions ADD COLUMN stage_changed_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE versions ADD COLUMN submitted_by TEXT NOT NULL DEFAULT '';
-- Incremented by every submission; approvals count only in the current round.
ALTER TABLE versions ADD COLUMN review_round BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX versions_semver ON versions(model_id, semver) WHERE semver IS NOT NULL;
CREATE INDEX versions_semver_order ON versions(model_id, semver_key);
CREATE INDEX versions_stage ON versions(stage, model_id);

CREATE TABLE version_transitions (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_id BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    from_stage TEXT NOT NULL,
    to_stage   TEXT NOT NULL,
    action     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    at         BIGINT NOT NULL
);
CREATE INDEX version_transitions_version ON version_transitions(version_id, id);

CREATE TABLE approvals (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_id BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    round      BIGINT NOT NULL,
    gate       TEXT NOT NULL CHECK (gate IN ('staging', 'production')),
    reviewer   TEXT NOT NULL,
    role       TEXT NOT NULL,
    decision   TEXT NOT NULL CHECK (decision IN ('approve', 'reject', 'comment')),
    rationale  TEXT NOT NULL,
    at         BIGINT NOT NULL
);
CREATE INDEX approvals_version ON approvals(version_id, round, gate);

CREATE TABLE policies (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('draft', 'active', 'inactive')),
    severity   TEXT NOT NULL,
    document   TEXT NOT NULL,
    source     TEXT NOT NULL,
    digest     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    UNIQUE (name, version)
);
CREATE INDEX policies_status ON policies(status, name);

CREATE TABLE policy_results (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_id     BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    evaluation     TEXT NOT NULL,
    target_stage   TEXT NOT NULL,
    policy         TEXT NOT NULL,
    policy_version BIGINT NOT NULL,
    severity       TEXT NOT NULL,
    rule_id        TEXT NOT NULL,
    action         TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    message        TEXT NOT NULL,
    waived         BOOLEAN NOT NULL DEFAULT FALSE,
    blocked        BOOLEAN NOT NULL DEFAULT FALSE,
    at             BIGINT NOT NULL
);
CREATE INDEX policy_results_version ON policy_results(version_id, id);

CREATE TABLE policy_exceptions (
    id            TEXT PRIMARY KEY,
    version_id    BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    policy        TEXT NOT NULL,
    justification TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('requested', 'approved', 'rejected', 'revoked')),
    requested_by  TEXT NOT NULL,
    requested_at  BIGINT NOT NULL,
    decided_by    TEXT NOT NULL DEFAULT '',
    decided_at    BIGINT,
    decision_note TEXT NOT NULL DEFAULT '',
    expires_at    BIGINT NOT NULL
);
CREATE INDEX policy_exceptions_version ON policy_exceptions(version_id, policy);

CREATE TABLE version_cards (
    version_id   BIGINT PRIMARY KEY REFERENCES versions(id) ON DELETE CASCADE,
    source_name  TEXT NOT NULL,
    source       TEXT NOT NULL,
    digest       TEXT NOT NULL,
    card         TEXT NOT NULL,
    completeness TEXT NOT NULL,
    findings     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL
);

CREATE TABLE eval_suites (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace_id BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    required     BOOLEAN NOT NULL DEFAULT FALSE,
    definition   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    updated_at   BIGINT NOT NULL,
    updated_by   TEXT NOT NULL,
    UNIQUE (namespace_id, name)
);

CREATE TABLE eval_results (
    id           TEXT PRIMARY KEY,
    version_id   BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    suite        TEXT NOT NULL,
    passed       BOOLEAN NOT NULL,
    metrics      TEXT NOT NULL,
    config       TEXT NOT NULL DEFAULT '{}',
    submitted_by TEXT NOT NULL,
    submitted_at BIGINT NOT NULL
);
CREATE INDEX eval_results_version ON eval_results(version_id, suite, submitted_at);

-- A webhook with no namespace receives the events of every namespace (for a security team).
CREATE TABLE webhooks (
    id           TEXT PRIMARY KEY,
    namespace_id BIGINT REFERENCES namespaces(id) ON DELETE CASCADE,
    url          TEXT NOT NULL,
    events       TEXT NOT NULL,
    secret       TEXT NOT NULL,
    active       BOOLEAN NOT NULL DEFAULT TRUE,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL
);
CREATE INDEX webhooks_namespace ON webhooks(namespace_id);

CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_status     BIGINT,
    last_error      TEXT NOT NULL DEFAULT '',
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, created_at);
