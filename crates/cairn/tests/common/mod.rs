//! Running the `cairn` binary from the command-line tests, as a user would: in a directory of
//! its own, with only the settings the test gives it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use cairn_test_utils::TestServer;

pub const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// Runs `cairn ARGS` in `cwd` with no `CAIRN_*` setting of the test's environment, its config
/// directory in `cwd`, and the server URL and key when given.
pub fn run_as(cwd: &Path, server: Option<(String, String)>, args: &[String]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIRN_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("CAIRN_CONFIG_DIR", cwd);
    if let Some((url, token)) = server {
        cmd.env("CAIRN_URL", url).env("CAIRN_TOKEN", token);
    }
    cmd.output().unwrap()
}

/// Runs `cairn ARGS` offline.
pub fn run(cwd: &Path, args: &[&str]) -> Output {
    run_as(cwd, None, &args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
}

/// Runs `cairn ARGS` against `s` with its admin key, off the async runtime.
pub async fn cairn(cwd: &Path, s: &TestServer, args: &[&str]) -> Output {
    let (cwd, args): (std::path::PathBuf, Vec<String>) =
        (cwd.to_path_buf(), args.iter().map(|a| a.to_string()).collect());
    let server = Some((s.url.clone(), s.token.clone()));
    tokio::task::spawn_blocking(move || run_as(&cwd, server, &args)).await.unwrap()
}

/// Everything it printed.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Asserts the exit code; returns what it printed.
#[track_caller]
pub fn exits(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    text(o)
}
