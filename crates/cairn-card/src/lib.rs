//! Model cards as code.
//!
//! `cairn-card` turns the facts a team keeps next to its code (a card source in YAML,
//! evaluation results, model configuration, dataset information, training logs) into
//! standard model cards — a Hugging Face `README.md`, a Google Model Card Toolkit JSON, EU
//! AI Act technical documentation, an EU CRA declaration, HTML and canonical JSON — and
//! checks cards: completeness per standard, leaked secrets, drift against new results.
//!
//! Main types: [`model::Card`] (the merged facts), [`input::InputPolicy`] (which files may
//! be read and how much), [`render::Format`], [`validate::Report`], [`drift::DriftReport`].
//! The library is offline and synchronous: it never touches the network or a database, so
//! the server can call it from `spawn_blocking` and CI can run it without a server.

pub mod cli;
pub mod diff;
pub mod drift;
pub mod error;
pub mod hf;
pub mod init;
pub mod input;
pub mod load;
pub mod mct;
pub mod model;
pub mod render;
pub mod secrets;
pub mod validate;

pub use error::{CardError, Result};
pub use model::{Card, Metric};
