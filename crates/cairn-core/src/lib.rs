//! Domain types and rules of Cairn, with no I/O.
//!
//! Everything here is pure: no async runtime, no database, no file system. Names are
//! newtypes that can only be built valid (parse, don't validate); the search-filter grammar
//! parses user filters to an AST and compiles them to parameterised SQL fragments that the
//! store runs on SQLite or PostgreSQL; [`principal::Principal`] says who is calling and what
//! they may do.
pub mod deploy;
pub mod evaluation;
pub mod filter;
pub mod lifecycle;
pub mod lineage;
pub mod manifest;
pub mod name;
pub mod policy;
pub mod principal;

pub use manifest::{FileEntry, FilePath, Manifest, ManifestError};
pub use name::{AliasName, ModelName, ModelRef, NameError, Namespace, TagKey, VersionRef, VersionSelector};
pub use principal::{AccountKind, Denied, Grant, NamespaceScope, Permission, Principal, Role, Scope};
