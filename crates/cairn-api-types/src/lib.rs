//! cairn-api-types
