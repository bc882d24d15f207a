//! `cairn`: the server, the command-line client and the offline card tool in one binary.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cairn", version, about = "A security-first registry for machine-learning models with model cards as code")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Model cards as code: init, generate, validate, check drift (offline, no server needed)
    Card(cairn_card::cli::CardArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Card(args) => cairn_card::cli::run(args),
    }
}
