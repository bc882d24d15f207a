-- Policy results are stored one row per evaluation (docs/POLICIES.md, "Actions"): the results
-- of its rules, in rule order, as one JSON array. With 50 policies of 5 rules a transition
-- wrote 250 rows, each with its index entries and its foreign-key check (about 3 ms on
-- PostgreSQL); now it writes one. Readers only ever read whole evaluations of one version.
--
-- results: [{"policy", "policy_version", "rule", "severity", "action", "outcome", "message",
--            "waived", "blocked"}, …]
CREATE TABLE policy_evaluations (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_id   BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    evaluation   TEXT NOT NULL,
    target_stage TEXT NOT NULL,
    at           BIGINT NOT NULL,
    results      TEXT NOT NULL
);
CREATE INDEX policy_evaluations_version ON policy_evaluations(version_id, id);

INSERT INTO policy_evaluations (version_id, evaluation, target_stage, at, results)
SELECT version_id, evaluation, target_stage, at,
       json_agg(json_build_object('policy', policy, 'policy_version', policy_version, 'rule', rule_id,
                                  'severity', severity, 'action', action, 'outcome', outcome,
                                  'message', message, 'waived', waived, 'blocked', blocked) ORDER BY id)::text
FROM policy_results
GROUP BY version_id, evaluation, target_stage, at
ORDER BY min(id);

DROP TABLE policy_results;
