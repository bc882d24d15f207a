//! Cairn's HTTP server (axum): the native API under `/api/v1`, health probes, and the
//! middleware that every request passes (request ids, structured logs, body limits,
//! timeouts, JSON errors, authentication).
//!
//! Handlers are thin: extract, authorise, call one store method, map the result. Every
//! `/api` route sits behind [`auth::require_auth`]; there is no anonymous API.

pub mod app;
pub mod audit_export;
pub mod auth;
pub mod backup;
mod convert;
pub mod error;
pub mod governance;
pub mod headers;
pub mod key_cache;
pub mod maintenance;
pub mod maintenance_mode;
pub mod metrics;
pub mod mfa;
pub mod mlflow;
pub mod page_token;
pub mod rate_limit;
pub mod routes;
pub mod sbom;
pub mod scanning;
pub mod serve;
pub mod session;
pub mod settings;
mod tar;
pub mod tls;
pub mod ui;
pub mod uploads;
pub mod webhooks;

pub use app::{AppState, build_router};
pub use settings::{LogFormat, Settings, SettingsOverrides};
