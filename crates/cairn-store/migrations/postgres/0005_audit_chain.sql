-- The audit chain (docs/AUDIT.md). Each event gets its place in the chain (seq, gapless from
-- 1), the salt and digest of its details, and its chain hash. Events written before this
-- migration are sealed in id order when the store opens. On PostgreSQL an event is sealed
-- when its transaction commits, under the row lock of audit_head, so the order is total
-- across replicas.
ALTER TABLE audit_events ADD COLUMN seq BIGINT;
ALTER TABLE audit_events ADD COLUMN salt TEXT;
ALTER TABLE audit_events ADD COLUMN details_digest TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_events_seq ON audit_events(seq);
CREATE INDEX audit_events_unsealed ON audit_events(id) WHERE seq IS NULL;
CREATE INDEX audit_events_time ON audit_events(occurred_at, id);
CREATE INDEX audit_events_action ON audit_events(action, id);

-- The chain's head (the last sealed event) and its anchor (the event before the first one
-- kept: the genesis until retention prunes).
CREATE TABLE audit_head (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    seq         BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    anchor_seq  BIGINT NOT NULL,
    anchor_hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash, anchor_seq, anchor_hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000',
        0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Signed checkpoints: the server's signature over (seq, head hash, time).
CREATE TABLE audit_checkpoints (
    seq       BIGINT PRIMARY KEY,
    head      TEXT NOT NULL,
    signed_at BIGINT NOT NULL,
    key_id    TEXT NOT NULL,
    signature TEXT NOT NULL
);

-- Every public key the server has signed with (checkpoints, versions).
CREATE TABLE signing_keys (
    key_id      TEXT PRIMARY KEY,
    public_key  TEXT NOT NULL,
    first_seen  BIGINT NOT NULL
);

-- Signatures over versions: the server's at commit, and the pusher's own.
CREATE TABLE version_signatures (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_id  BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('server', 'user')),
    statement   TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    signature   TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX version_signatures_version ON version_signatures(version_id, id);
