-- Card facts for search (docs/SEARCH.md): the licence and the task of a version's card, copied
-- out of its canonical JSON into columns when the card is attached, so that `license = 'mit'`
-- compares a column instead of parsing every card. NULL when the card does not say.
--
-- license: model.license, as the card gives it; filters compare lower(license COLLATE "C")
--          (ASCII-only folding, as SQLite's lower()), so SPDX identifiers match whatever their
--          case.
-- task:    model.pipeline_tag, or else evaluation.task.
--
-- Cards stored before this migration are backfilled with the rules the store applies to new
-- ones (evaluation.rs, CardFacts): only non-blank strings count, a card that is not JSON has
-- no facts.
ALTER TABLE version_cards ADD COLUMN license TEXT, ADD COLUMN task TEXT;

-- A card that does not parse must not fail the migration: the helper answers NULL for it.
CREATE FUNCTION pg_temp.cairn_card_fact(card TEXT, path TEXT[]) RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
    fact JSONB;
BEGIN
    fact := card::jsonb #> path;
    IF jsonb_typeof(fact) = 'string' AND btrim(fact #>> '{}') <> '' THEN
        RETURN fact #>> '{}';
    END IF;
    RETURN NULL;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;

UPDATE version_cards SET
    license = pg_temp.cairn_card_fact(card, '{model,license}'),
    task = COALESCE(pg_temp.cairn_card_fact(card, '{model,pipeline_tag}'),
                    pg_temp.cairn_card_fact(card, '{evaluation,task}'));

DROP FUNCTION pg_temp.cairn_card_fact(TEXT, TEXT[]);

-- The expression filters compare, so "which cards say mit" is an index lookup.
CREATE INDEX version_cards_license ON version_cards (lower(license COLLATE "C"));
CREATE INDEX version_cards_task ON version_cards (task);
