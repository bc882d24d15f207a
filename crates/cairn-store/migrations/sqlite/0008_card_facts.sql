-- Card facts for search (docs/SEARCH.md): the licence and the task of a version's card, copied
-- out of its canonical JSON into columns when the card is attached, so that `license = 'mit'`
-- compares a column instead of parsing every card. NULL when the card does not say.
--
-- license: model.license, as the card gives it; filters compare lower(license), so SPDX
--          identifiers match whatever their case.
-- task:    model.pipeline_tag, or else evaluation.task.
--
-- Cards stored before this migration are backfilled with the rules the store applies to new
-- ones (evaluation.rs, CardFacts): only non-blank strings count, a card that is not JSON has
-- no facts.
ALTER TABLE version_cards ADD COLUMN license TEXT;
ALTER TABLE version_cards ADD COLUMN task TEXT;

UPDATE version_cards SET
    license = CASE WHEN json_type(card, '$.model.license') = 'text'
                        AND trim(json_extract(card, '$.model.license')) <> ''
                   THEN json_extract(card, '$.model.license') END,
    task = COALESCE(
        CASE WHEN json_type(card, '$.model.pipeline_tag') = 'text'
                  AND trim(json_extract(card, '$.model.pipeline_tag')) <> ''
             THEN json_extract(card, '$.model.pipeline_tag') END,
        CASE WHEN json_type(card, '$.evaluation.task') = 'text'
                  AND trim(json_extract(card, '$.evaluation.task')) <> ''
             THEN json_extract(card, '$.evaluation.task') END)
WHERE json_valid(card);

-- The expression filters compare, so "which cards say mit" is an index lookup.
CREATE INDEX version_cards_license ON version_cards(lower(license));
CREATE INDEX version_cards_task ON version_cards(task);
