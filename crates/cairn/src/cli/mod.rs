//! The subcommands.

pub mod login;
pub mod models;
pub mod serve;

use std::process::ExitCode;

use cairn_client::ClientError;

/// Prints an error and picks the exit code: 2 when the server refused the input, 1 otherwise.
pub fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    match e.downcast_ref::<ClientError>().and_then(ClientError::status) {
        Some(s) if (400..500).contains(&s) && s != 401 && s != 403 => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

/// A usage error (exit 2).
pub fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}
