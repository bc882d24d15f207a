//! Model cards as code.
//!
//! `cairn-card` turns the facts a team keeps next to its code (a card source in YAML,
//! evaluation results, model configuration, dataset information, training logs) into
//! standard model cards — a Hugging Face `README.md`, a Google Model Card Toolkit JSON, EU
//! AI Act technical documentation, an EU CRA declaration, HTML and canonical JSON — and
//! checks cards: completeness per standard, leaked secrets, drift against new results.
//!
//! The API the server and the CLI share:
//! - [`load::parse_card`] / [`load::load_card`]: any card form into a [`model::Card`];
//! - [`input`]: results, config, dataset and log parsers behind an [`input::InputPolicy`];
//! - [`render::render`] in a [`render::Format`], or through an organisation's templates;
//! - [`validate::validate`] against the rules in `rules/rules.yaml`;
//! - [`secrets::Scanner`]: findings by rule and place, never the secret;
//! - [`drift::compare`] and [`drift::update_in_place`]; [`diff::diff`] between versions.
//!
//! What it must not do: touch the network or a database, or hold a whole large input in
//! memory. It is synchronous; the server calls it from `spawn_blocking`.

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
