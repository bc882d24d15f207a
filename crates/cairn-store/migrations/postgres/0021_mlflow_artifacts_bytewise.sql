-- The MLflow artifact tree is listed and deleted by path ranges (`dir/` <= path < `dir0`),
-- which hold exactly the paths under `dir` only when compared byte by byte. The queries
-- compare under the "C" collation whatever the database's own (an ICU or glibc collation
-- orders `+`, `~` and other punctuation differently); this index serves them.
CREATE INDEX mlflow_artifacts_path_bytewise ON mlflow_artifacts (path COLLATE "C");
