//! cairn-test-utils
