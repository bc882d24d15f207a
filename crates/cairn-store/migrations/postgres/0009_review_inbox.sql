-- The reviewers' inbox lists versions waiting at an approval gate (submitted, staging),
-- oldest first: an index keeps that a short range scan however many versions there are.
CREATE INDEX versions_waiting ON versions(stage, stage_changed_at, id);
