-- MLflow's proxied multipart uploads (docs/MLFLOW.md): each part arrives as a blob of its
-- own (so any replica can take any part), and completing the upload joins them into the
-- file's blob. Part blobs stay in use while their upload is open.
CREATE TABLE mlflow_multipart_uploads (
    id         TEXT PRIMARY KEY,
    path       TEXT NOT NULL,
    num_parts  BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE mlflow_multipart_parts (
    upload_id   TEXT NOT NULL REFERENCES mlflow_multipart_uploads(id) ON DELETE CASCADE,
    part_number BIGINT NOT NULL,
    digest      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
CREATE INDEX mlflow_multipart_parts_digest ON mlflow_multipart_parts(digest);
