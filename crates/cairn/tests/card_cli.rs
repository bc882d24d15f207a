//! `cairn card …` through the real binary: exit codes 0 / 1 / 2, files written, messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cairn(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("card")
        .args(args)
        .current_dir(dir)
        .env_remove("CAIRN_CARD_MAX_INPUT_SIZE")
        .output()
        .expect("run cairn")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/card")
}

fn ex(name: &str) -> String {
    examples().join(name).display().to_string()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn init_generate_validate_round_trip() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = cairn(dir.path(), &["init", "--template", "nlp_classification", "--output", "card.yaml"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let src = std::fs::read_to_string(dir.path().join("card.yaml")).expect("card.yaml");
    assert!(src.contains("pipeline_tag: \"text-classification\""));
    // A fresh template is incomplete: validate fails with findings, exit 1.
    let o = cairn(dir.path(), &["validate", "card.yaml"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("CARD001"));
    // init refuses to overwrite.
    assert_eq!(code(&cairn(dir.path(), &["init", "--output", "other.yaml"])), 0);
    let o = cairn(dir.path(), &["init", "--output", "other.yaml"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--force"));

    let o = cairn(dir.path(), &["generate", &ex("results.csv"), "--source", &ex("card.yaml")]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(dir.path().join("README.md").exists(), "default output for huggingface is README.md");
    let o = cairn(dir.path(), &["validate", "README.md", "--standard", "huggingface", "--format", "json"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json report");
    assert_eq!(report["valid"], true);
    let o = cairn(dir.path(), &["validate", "README.md", "--format", "sarif", "--min-score", "1.0"]);
    let sarif: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("sarif");
    assert_eq!(sarif["version"], "2.1.0");
}

#[test]
fn generate_to_stdout_and_every_format() {
    let dir = tempfile::tempdir().expect("tmp");
    for format in ["huggingface", "google", "eu-ai-act", "eu-cra", "html", "json"] {
        let o = cairn(
            dir.path(),
            &["generate", &ex("eval.json"), "--source", &ex("minimal.yaml"), "--format", format, "-o", "-"],
        );
        assert_eq!(code(&o), 0, "{format}: {}", stderr(&o));
        assert!(!o.stdout.is_empty());
    }
}

#[test]
fn usage_and_input_errors_exit_2_with_location() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("bad.json"), "{\n  \"accuracy\": 0.9,\n  \"f1\": oops\n}\n").expect("write");
    let o = cairn(dir.path(), &["generate", "bad.json"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("bad.json:3:"), "{}", stderr(&o));

    std::fs::write(dir.path().join("bad.csv"), "metric,value\naccuracy,0.9\nf1,high\n").expect("write");
    let o = cairn(dir.path(), &["generate", "bad.csv"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("bad.csv:3:2"), "{}", stderr(&o));

    std::fs::write(dir.path().join("results.txt"), "accuracy 0.9").expect("write");
    let o = cairn(dir.path(), &["generate", "results.txt"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("not allowed"));

    let big = "metric,value\n".to_string() + &"accuracy,0.9\n".repeat(2000);
    std::fs::write(dir.path().join("big.csv"), big).expect("write");
    let o = cairn(dir.path(), &["generate", "big.csv", "--max-input-size", "1KB"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("larger than the limit"), "{}", stderr(&o));
    let o = cairn(dir.path(), &["generate", "big.csv", "--max-input-size", "1MB", "-o", "-"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    assert_eq!(code(&cairn(dir.path(), &["generate", "--format", "nope"])), 2);
    assert_eq!(code(&cairn(dir.path(), &["validate"])), 2);
    assert_eq!(code(&cairn(dir.path(), &["validate", "missing.yaml"])), 2);
}

#[test]
fn secrets_exit_1_without_echo() {
    let dir = tempfile::tempdir().expect("tmp");
    let token = format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5");
    std::fs::write(dir.path().join("card.yaml"), format!("model:\n  name: m\n  description: \"token {token}\"\n"))
        .expect("write");
    let o = cairn(dir.path(), &["generate", &ex("eval.json"), "--source", "card.yaml"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("github-token"));
    assert!(!stderr(&o).contains(&token[4..]), "the secret was echoed");
    assert!(!dir.path().join("README.md").exists());
    let o = cairn(dir.path(), &["validate", "card.yaml"]);
    assert_eq!(code(&o), 1);
    assert!(!stdout(&o).contains(&token[4..]));
    let o =
        cairn(dir.path(), &["generate", &ex("eval.json"), "--source", "card.yaml", "--allow-secret", "github-token"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn check_drift_fail_and_update() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(ex("card.yaml"), dir.path().join("card.yaml")).expect("copy");
    let o = cairn(dir.path(), &["check-drift", "card.yaml", "--against", &ex("results-new.json")]);
    assert_eq!(code(&o), 0, "drift alone does not fail without --fail-on-drift");
    assert!(stdout(&o).contains("SIGNIFICANT"));
    let o = cairn(dir.path(), &["check-drift", "card.yaml", "--against", &ex("results-new.json"), "--fail-on-drift"]);
    assert_eq!(code(&o), 1);
    let o = cairn(
        dir.path(),
        &[
            "check-drift",
            "card.yaml",
            "--against",
            &ex("results-new.json"),
            "--metric-threshold",
            "accuracy=0.05",
            "--fail-on-drift",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let o = cairn(dir.path(), &["check-drift", "card.yaml", "--against", &ex("results-new.json"), "--update"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = cairn(
        dir.path(),
        &["check-drift", "card.yaml", "--against", &ex("results-new.json"), "--fail-on-drift", "--format", "json"],
    );
    assert_eq!(code(&o), 0, "after --update there is no drift: {}", stdout(&o));
    let o = cairn(dir.path(), &["diff", &ex("card.yaml"), "card.yaml", "--exit-code"]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("accuracy [imdb/test]: 0.923 → 0.89"), "{}", stdout(&o));
}
