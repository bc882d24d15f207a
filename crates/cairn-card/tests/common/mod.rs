//! Helpers shared by the card integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use cairn_card::cli::{CardArgs, Outcome, execute};
use clap::Parser;

#[derive(Parser)]
struct Harness {
    #[command(flatten)]
    card: CardArgs,
}

/// Runs `cairn card <args>` in-process.
pub fn card(args: &[&str]) -> cairn_card::Result<Outcome> {
    let mut argv = vec!["card"];
    argv.extend_from_slice(args);
    let parsed = Harness::try_parse_from(argv).unwrap_or_else(|e| panic!("bad test arguments: {e}"));
    execute(parsed.card)
}

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/card")
}

pub fn example(name: &str) -> String {
    examples().join(name).display().to_string()
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p.display().to_string()
}

pub fn read(path: &str) -> String {
    std::fs::read_to_string(path).expect("read output")
}

/// Fake credentials assembled at run time so no scanner flags this source file.
pub fn fake_github_token() -> String {
    format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5")
}
