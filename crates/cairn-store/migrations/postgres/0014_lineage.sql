-- Lineage (docs/SUPPLY_CHAIN.md): what each version was made from. One row is one edge from
-- an upstream thing to the version `version_id`:
--   dataset     name = dataset name, ref = dataset version, uri, digest
--   run         name = run id, platform, uri, params (JSON object of strings)
--   code        name = repository, ref = commit
--   base_model  a Cairn version (parent_version_id, with name = ns/name and ref = its number
--               as recorded) or an external model (name = e.g. hf:org/repo, ref = revision)
-- Edges are added at push time or later and removed only while the version is a draft (or
-- sent back for changes); each change is audited in the same transaction.
-- parent_version_id is set NULL if the parent is deleted: name and ref still say what it was.
CREATE TABLE lineage_edges (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_id        BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    kind              TEXT NOT NULL CHECK (kind IN ('dataset', 'run', 'code', 'base_model')),
    name              TEXT NOT NULL,
    ref               TEXT NOT NULL DEFAULT '',
    uri               TEXT NOT NULL DEFAULT '',
    digest            TEXT NOT NULL DEFAULT '',
    platform          TEXT NOT NULL DEFAULT '',
    params            TEXT NOT NULL DEFAULT '{}',
    parent_version_id BIGINT REFERENCES versions(id) ON DELETE SET NULL,
    created_at        BIGINT NOT NULL,
    created_by        TEXT NOT NULL
);
-- The same input is recorded once per version (retries are idempotent).
CREATE UNIQUE INDEX lineage_edges_unique ON lineage_edges(version_id, kind, name, ref);
-- Upstream walks go from a version to its edges, downstream walks from a parent to its
-- children, impact queries from a dataset (or run, commit, external model) to its users.
CREATE INDEX lineage_edges_down ON lineage_edges(parent_version_id, version_id) WHERE parent_version_id IS NOT NULL;
CREATE INDEX lineage_edges_by_input ON lineage_edges(kind, name, ref, version_id);
