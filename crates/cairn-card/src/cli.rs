//! `cairn card …`

/// `cairn card …`
#[derive(clap::Args, Debug)]
pub struct CardArgs {}

/// Runs a `cairn card` command and returns the process exit code.
pub fn run(_args: CardArgs) -> std::process::ExitCode {
    std::process::ExitCode::from(2)
}
