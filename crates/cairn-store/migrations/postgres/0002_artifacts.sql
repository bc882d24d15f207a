-- Model files: content-addressed blobs, uploads in progress, and the files of each version.

-- Every version has a manifest; versions created without files have the empty one.
ALTER TABLE versions ADD COLUMN digest TEXT NOT NULL
    DEFAULT 'sha256:93d4a2cbd06da9a87ffbacc91c9577a6c251faf97832018c44edf24c27aa0de8';
ALTER TABLE versions ADD COLUMN file_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE versions ADD COLUMN size BIGINT NOT NULL DEFAULT 0;

-- Blobs the blob store holds (or is about to hold), by SHA-256 (hex) of their content.
-- pending: being completed; present: stored and verified; deleting: garbage collection
-- has claimed it. last_used_at is refreshed whenever an upload relies on the blob, and
-- garbage collection only takes blobs unused for longer than any upload may live.
CREATE TABLE blobs (
    digest       TEXT PRIMARY KEY,
    size         BIGINT NOT NULL CHECK (size >= 0),
    state        TEXT NOT NULL CHECK (state IN ('pending', 'present', 'deleting')),
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL
);

-- A blob whose parts are arriving: one per digest, shared by every upload that needs it,
-- so an interrupted push resumes where any earlier attempt stopped.
CREATE TABLE blob_uploads (
    digest     TEXT PRIMARY KEY,
    size       BIGINT NOT NULL CHECK (size >= 0),
    handle     TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('open', 'completing')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE blob_upload_parts (
    digest TEXT NOT NULL REFERENCES blob_uploads(digest) ON DELETE CASCADE,
    part   BIGINT NOT NULL CHECK (part >= 0),
    size   BIGINT NOT NULL CHECK (size >= 0),
    etag   TEXT NOT NULL,
    PRIMARY KEY (digest, part)
);

-- A push in progress: the files declared for the next version of a model.
CREATE TABLE uploads (
    id         TEXT PRIMARY KEY,
    model_id   BIGINT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    state      TEXT NOT NULL CHECK (state IN ('open', 'committed')),
    version_id BIGINT REFERENCES versions(id) ON DELETE SET NULL,
    file_count BIGINT NOT NULL,
    total_size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX uploads_expires ON uploads(expires_at);

CREATE TABLE upload_files (
    upload_id TEXT NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    path      TEXT NOT NULL,
    size      BIGINT NOT NULL CHECK (size >= 0),
    digest    TEXT NOT NULL,
    PRIMARY KEY (upload_id, path)
);
CREATE INDEX upload_files_digest ON upload_files(digest);

-- The files of a committed version; never changed after the commit.
CREATE TABLE version_files (
    version_id BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    size       BIGINT NOT NULL CHECK (size >= 0),
    digest     TEXT NOT NULL REFERENCES blobs(digest),
    PRIMARY KEY (version_id, path)
);
CREATE INDEX version_files_digest ON version_files(digest);
