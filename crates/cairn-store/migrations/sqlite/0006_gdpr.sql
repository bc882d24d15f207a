-- Data-subject requests under the GDPR (docs/PRIVACY.md): access and portability (an
-- export of everything held about a person), rectification and erasure. Each request is
-- kept with its status; requests made through Cairn are fulfilled at once, so they are
-- written 'completed' (or 'rejected', with the reason in note). After an erasure the
-- subject column holds the pseudonym 'erased:<user id>', never the person's name.
CREATE TABLE gdpr_requests (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('access', 'portability', 'rectification', 'erasure')),
    subject      TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('open', 'completed', 'rejected')),
    requested_by TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    completed_at INTEGER,
    note         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX gdpr_requests_time ON gdpr_requests(requested_at, id);
CREATE INDEX gdpr_requests_subject ON gdpr_requests(subject_id);
