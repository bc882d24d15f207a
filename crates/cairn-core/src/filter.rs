//! Search-filter grammar (being written).
