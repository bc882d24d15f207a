-- Proof of possession (docs/ARTIFACTS.md, "Who may reuse stored bytes"). Knowing a blob's
-- digest is not enough to put it in a version: an upload may use a stored blob only if its
-- caller may read a version that holds it, or if its account sent every byte of it.
--
-- blob_upload_parts.upload_id: which upload sent the part whose receipt is kept (NULL for parts
--   received before this migration, which then prove nothing).
-- upload_proofs: the stored blobs an upload may use because its account sent all of them (in
--   it, or in an earlier upload of the same account: a re-run push).
-- upload_proof_parts: parts of a blob the server already held, sent again and compared with
--   the stored bytes; when every part has arrived, all matching proves the blob for the
--   account, any mismatch forgets them all.
ALTER TABLE blob_upload_parts ADD COLUMN upload_id TEXT;

CREATE TABLE upload_proofs (
    upload_id TEXT NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    digest    TEXT NOT NULL,
    PRIMARY KEY (upload_id, digest)
);

CREATE TABLE upload_proof_parts (
    upload_id TEXT NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    digest    TEXT NOT NULL,
    part      INTEGER NOT NULL CHECK (part >= 0),
    matched   INTEGER NOT NULL CHECK (matched IN (0, 1)),
    PRIMARY KEY (upload_id, digest, part)
);
