//! Cairn's evidence primitives, free of any database or network:
//!
//! - [`chain`]: how an audit event is hashed into the chain. The chained part of an event
//!   holds no personal data; the event's details (actor, target, states, address, user
//!   agent) enter the chain only through a salted digest, so they can later be erased or
//!   pseudonymised (GDPR) while the chain stays verifiable.
//! - [`keys`]: the Ed25519 signing key (PKCS#8 PEM, mode 0600) and public keys (SPKI PEM).
//! - [`checkpoint`]: signed (sequence, head hash, time) statements.
//! - [`statement`]: what the server signs when a version is committed, and what a user
//!   signs at push time.
//! - [`verify`]: a streaming verifier that reports the first break in a chain.
//! - [`report`]: how a version was decided (`cairn audit explain`) and compliance reports.
//! - [`retention`]: how long events are kept, and what a pruning records.
//! - [`export`]: the JSON Lines export format that `cairn audit verify` reads.
//! - [`evidence`]: evidence bundles (`tar.gz`) about one version, and their offline check.
//!
//! The formats are specified in `docs/AUDIT.md`.

pub mod chain;
pub mod checkpoint;
pub mod evidence;
pub mod export;
pub mod keys;
pub mod report;
pub mod retention;
pub mod statement;
pub mod verify;

pub use chain::{AuditRecord, EventDetails, GENESIS, Hash};
pub use checkpoint::Checkpoint;
pub use keys::{KeyError, PublicKey, SigningKey};
pub use verify::{Anchor, Break, BreakKind, DetailsCheck, Report, Verifier, check_details};
