-- Foundation: accounts, API keys, namespaces, models, versions, tags, aliases, audit.
-- Timestamps are milliseconds since the Unix epoch (INTEGER), identical on both backends.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL DEFAULT '',
    email         TEXT NOT NULL DEFAULT '',
    password_hash TEXT,
    kind          TEXT NOT NULL DEFAULT 'user' CHECK (kind IN ('user', 'service')),
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE namespaces (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT NOT NULL
);

CREATE TABLE models (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace_id   BIGINT NOT NULL REFERENCES namespaces(id),
    name           TEXT NOT NULL,
    full_name      TEXT NOT NULL UNIQUE,
    description    TEXT NOT NULL DEFAULT '',
    latest_version BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    updated_at     BIGINT NOT NULL,
    updated_by     TEXT NOT NULL,
    UNIQUE (namespace_id, name)
);
CREATE INDEX models_created ON models(created_at, id);
CREATE INDEX models_updated ON models(updated_at, id);

CREATE TABLE model_tags (
    model_id BIGINT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

CREATE TABLE versions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id    BIGINT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    number      BIGINT NOT NULL CHECK (number >= 1),
    description TEXT NOT NULL DEFAULT '',
    source      TEXT NOT NULL DEFAULT '',
    run_id      TEXT NOT NULL DEFAULT '',
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT NOT NULL,
    UNIQUE (model_id, number)
);
CREATE INDEX versions_created ON versions(model_id, created_at, id);

CREATE TABLE version_tags (
    version_id BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (version_id, key)
);

CREATE TABLE aliases (
    model_id   BIGINT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    alias      TEXT NOT NULL,
    version_id BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (model_id, alias)
);
CREATE INDEX aliases_version ON aliases(version_id);

CREATE TABLE audit_events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at  BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    key_id       TEXT,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    before_state TEXT,
    after_state  TEXT,
    request_id   TEXT,
    source_ip    TEXT,
    user_agent   TEXT
);
CREATE INDEX audit_events_target ON audit_events(target, id);
CREATE INDEX audit_events_actor ON audit_events(actor, id);

CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
