//! Reading secrets: from a prompt on the terminal without echo, or one line at a time from
//! standard input (`--password-stdin`). Never from a flag: flags end up in shell history and
//! in the process list.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};

use crate::cli::UsageError;

/// Reads one line of standard input, without its line ending.
pub fn stdin_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    let n = std::io::stdin().lock().read_line(&mut line).with_context(|| format!("cannot read {what} from stdin"))?;
    if n == 0 {
        bail!(UsageError(format!("standard input ended before {what}")));
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Asks for a secret on the terminal without echoing it.
pub fn secret(prompt: &str) -> anyhow::Result<String> {
    if !std::io::stderr().is_terminal() && !std::io::stdin().is_terminal() {
        bail!(UsageError(format!(
            "no terminal to ask on ({}): pass --password-stdin and write it to standard input",
            prompt.trim_end_matches([':', ' '])
        )));
    }
    rpassword::prompt_password(prompt).context("cannot read from the terminal")
}

/// Asks for a line that may be shown (a user name, a one-time code).
pub fn visible(prompt: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!(UsageError(format!("no terminal to ask on ({})", prompt.trim_end_matches([':', ' ']))));
    }
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    stdin_line(prompt.trim_end_matches([':', ' ']))
}

/// A new password: one line of stdin, or typed twice at a prompt.
pub fn new_password(from_stdin: bool, whose: &str) -> anyhow::Result<String> {
    if from_stdin {
        return stdin_line("the password");
    }
    let first = secret(&format!("New password for {whose}: "))?;
    let again = secret("Type it again: ")?;
    if first != again {
        bail!(UsageError("the two passwords differ; nothing was changed".into()));
    }
    Ok(first)
}
