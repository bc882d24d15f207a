//! cairn-core
