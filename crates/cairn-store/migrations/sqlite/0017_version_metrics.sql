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
    version_id INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    value      REAL NOT NULL,
    source     TEXT NOT NULL CHECK (source IN ('card', 'evaluation')),
    at         INTEGER NOT NULL,
    PRIMARY KEY (version_id, name)
);
CREATE INDEX version_metrics_name_value ON version_metrics(name, value);

-- Newest result first: the first row inserted for a (version, name) stays.
INSERT OR IGNORE INTO version_metrics (version_id, name, value, source, at)
SELECT r.version_id, json_extract(m.value, '$.name'), json_extract(m.value, '$.value'), 'evaluation', r.submitted_at
FROM eval_results r, json_each(r.metrics) m
WHERE json_valid(r.metrics) AND json_type(r.metrics) = 'array'
  AND json_type(m.value, '$.name') = 'text' AND json_type(m.value, '$.value') IN ('integer', 'real')
ORDER BY r.submitted_at DESC, r.id DESC;

-- Then the cards, for the metrics no result measured: unqualified entries first.
INSERT OR IGNORE INTO version_metrics (version_id, name, value, source, at)
SELECT c.version_id, json_extract(m.value, '$.name'), json_extract(m.value, '$.value'), 'card', c.created_at
FROM version_cards c, json_each(c.card, '$.evaluation.metrics') m
WHERE json_valid(c.card) AND json_type(c.card, '$.evaluation.metrics') = 'array'
  AND json_type(m.value, '$.name') = 'text' AND json_type(m.value, '$.value') IN ('integer', 'real')
ORDER BY c.version_id,
    (COALESCE(json_type(m.value, '$.dataset'), 'null') <> 'null'
     OR COALESCE(json_type(m.value, '$.split'), 'null') <> 'null'
     OR COALESCE(json_type(m.value, '$.slice'), 'null') <> 'null'),
    m.key;
