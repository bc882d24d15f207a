-- Metric values for search (docs/SEARCH.md, `metrics.accuracy > 0.9`): one row per version
-- and metric name, so a filter compares a column instead of parsing cards and results.
--
-- value:  the latest evaluation result that measured the metric (source 'evaluation'), else
--         what the version's card claims (source 'card'; an entry without dataset, split or
--         slice first, else the first one), as the policy facts read them (server
--         governance.rs).
-- The store keeps the rows current when a card is attached and when a result is stored
-- (evaluation.rs); rows of versions stored before this migration are filled in below with the
-- same rules.
CREATE TABLE version_metrics (
    version_id BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    value      DOUBLE PRECISION NOT NULL,
    source     TEXT NOT NULL CHECK (source IN ('card', 'evaluation')),
    at         BIGINT NOT NULL,
    PRIMARY KEY (version_id, name)
);
CREATE INDEX version_metrics_name_value ON version_metrics(name, value);

-- Text that does not parse as JSON must not fail the migration: the helper answers NULL.
CREATE FUNCTION pg_temp.cairn_json(t TEXT) RETURNS JSONB LANGUAGE plpgsql AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;

INSERT INTO version_metrics (version_id, name, value, source, at)
SELECT DISTINCT ON (r.version_id, m.e->>'name')
    r.version_id, m.e->>'name', (m.e->>'value')::double precision, 'evaluation', r.submitted_at
FROM eval_results r
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(pg_temp.cairn_json(r.metrics)) = 'array' THEN pg_temp.cairn_json(r.metrics) ELSE '[]'::jsonb END
) AS m(e)
WHERE jsonb_typeof(m.e->'name') = 'string' AND jsonb_typeof(m.e->'value') = 'number'
ORDER BY r.version_id, m.e->>'name', r.submitted_at DESC, r.id DESC;

INSERT INTO version_metrics (version_id, name, value, source, at)
SELECT DISTINCT ON (c.version_id, m.e->>'name')
    c.version_id, m.e->>'name', (m.e->>'value')::double precision, 'card', c.created_at
FROM version_cards c
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(pg_temp.cairn_json(c.card) #> '{evaluation,metrics}') = 'array'
         THEN pg_temp.cairn_json(c.card) #> '{evaluation,metrics}' ELSE '[]'::jsonb END
) WITH ORDINALITY AS m(e, i)
WHERE jsonb_typeof(m.e->'name') = 'string' AND jsonb_typeof(m.e->'value') = 'number'
ORDER BY c.version_id, m.e->>'name',
    (COALESCE(jsonb_typeof(m.e->'dataset'), 'null') <> 'null'
     OR COALESCE(jsonb_typeof(m.e->'split'), 'null') <> 'null'
     OR COALESCE(jsonb_typeof(m.e->'slice'), 'null') <> 'null'),
    m.i
ON CONFLICT (version_id, name) DO NOTHING;
