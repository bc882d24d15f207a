-- Text search over model names and descriptions (`full_name ILIKE '%…%' OR description
-- ILIKE '%…%'`, the web UI's search box): a pattern with a leading wildcard cannot use a
-- B-tree, so without these indexes every search reads every model. pg_trgm's GIN indexes
-- serve LIKE and ILIKE with any wildcards (patterns of three or more characters).
-- `fastupdate = off`: new entries go straight into the index instead of a pending list that
-- only a vacuum merges; with a long pending list (after many models are created at once) the
-- planner prices the index above reading every row, and searches fall back to that.
--
-- pg_trgm ships with PostgreSQL and is a trusted extension: a role that may create objects
-- in the database may install it. Where it is not available or not allowed, the migration
-- goes on without the indexes (search still works, by reading every row) and says so.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
    RAISE WARNING 'cairn: pg_trgm is not available (%); model text search will read every model', SQLERRM;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX IF NOT EXISTS models_full_name_trgm ON models USING gin (full_name gin_trgm_ops) WITH (fastupdate = off);
        CREATE INDEX IF NOT EXISTS models_description_trgm ON models USING gin (description gin_trgm_ops) WITH (fastupdate = off);
    END IF;
END
$$;
