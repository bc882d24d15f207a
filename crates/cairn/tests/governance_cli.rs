//! The governance commands — `push --card --semver`, `policy apply|check`, `submit`,
//! `lifecycle`, `eval suite put` / `eval submit`, `card show` — run as the real binary
//! against a real server (SQLite).
//!
//! A blocking policy that the pushed card does not satisfy refuses `submit` with exit 1 and
//! names the policy; the dry run says the same; the version stays a draft. Evaluation
//! results that pass their suite exit 0, failing ones exit 1 and name the metric.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use cairn_api_types as api;
use cairn_test_utils::{Backend, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// Runs the binary with the test server's URL and admin key, in `cwd`.
async fn cairn(s: &TestServer, cwd: &Path, args: &[&str]) -> Output {
    let (url, token, cwd) = (s.url.clone(), s.token.clone(), cwd.to_path_buf());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(BIN);
        cmd.args(&args).current_dir(&cwd).stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("CAIRN_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("CAIRN_CONFIG_DIR", &cwd).env("CAIRN_URL", url).env("CAIRN_TOKEN", token);
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[track_caller]
fn exits(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    text(o)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    p(&path).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_commands_on_sqlite() {
    let Some(s) = TestServer::start(Backend::Sqlite, "governance_commands_on_sqlite").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // A model with a risk tier, owner and team, made by the CLI.
    let out =
        cairn(&s, dir, &["models", "create", "team/m", "--risk-tier", "low", "--owner", "admin", "--team", "platform"])
            .await;
    exits(&out, 0);
    let model = s.client().get_model("team/m").await.unwrap();
    assert_eq!(model.full_name, "team/m");

    // A broken card fails before anything is uploaded (exit 2, no version made).
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("weights.bin"), b"weights").unwrap();
    let broken = write(dir, "broken.yaml", "model: [not, a, mapping\n");
    let out = cairn(&s, dir, &["push", "team/m", p(&files), "--card", &broken, "-q"]).await;
    let said = exits(&out, 2);
    assert!(said.contains("broken.yaml"), "{said}");
    let versions = s.client().list_versions("team/m", &Default::default()).await.unwrap();
    assert!(versions.versions.is_empty(), "{versions:?}");

    // Push with a card, a semver label and lineage.
    let card = write(dir, "card.yaml", "model:\n  name: m\n  license: apache-2.0\n");
    let out = cairn(
        &s,
        dir,
        &[
            "push",
            "team/m",
            p(&files),
            "--card",
            &card,
            "--semver",
            "1.0.0",
            "--code-commit",
            "0123456789abcdef0123456789abcdef01234567",
            "--training-job",
            "job-7",
            "-q",
        ],
    )
    .await;
    let said = exits(&out, 0);
    assert!(said.contains("Attached card card.yaml"), "{said}");
    let v = s.client().get_version("team/m", "1.0.0").await.unwrap();
    assert_eq!((v.version, v.semver.as_deref(), v.stage.as_str()), (1, Some("1.0.0"), "draft"));

    // A blocking policy the card does not satisfy.
    let policy = write(
        dir,
        "policy.yaml",
        "name: mit-only\nseverity: high\nscope:\n  stages: [submitted]\nrules:\n  - id: licence-mit\n    action: \
         block\n    condition:\n      field: card.model.license\n      op: in\n      value: [mit]\n",
    );
    let said = exits(&cairn(&s, dir, &["policy", "apply", &policy]).await, 0);
    assert!(said.contains("mit-only"), "{said}");
    let said = exits(&cairn(&s, dir, &["policy", "list"]).await, 0);
    assert!(said.contains("mit-only") && said.contains("active"), "{said}");

    // The dry runs: the active policies, and the document itself, both block.
    let said = exits(&cairn(&s, dir, &["policy", "check", "team/m:1.0.0", "--target", "submitted"]).await, 1);
    assert!(said.contains("mit-only") && said.contains("BLOCKED"), "{said}");
    let said =
        exits(&cairn(&s, dir, &["policy", "test", &policy, "--version", "team/m:1", "--target", "submitted"]).await, 1);
    assert!(said.contains("licence-mit"), "{said}");

    // Submitting is refused by the policy (exit 1, the policy named); the version stays a draft.
    let said = exits(&cairn(&s, dir, &["submit", "team/m:1.0.0", "--reason", "ready"]).await, 1);
    assert!(said.contains("mit-only"), "{said}");
    let said = exits(&cairn(&s, dir, &["lifecycle", "team/m:1"]).await, 0);
    assert!(said.contains("Stage:       draft"), "{said}");
    // An illegal transition is a usage error.
    exits(&cairn(&s, dir, &["promote", "team/m:1"]).await, 2);
    exits(&cairn(&s, dir, &["submit", "team/m"]).await, 2);

    // An evaluation suite, and results that pass and fail it.
    let suite = write(dir, "suite.yaml", "metrics:\n  - {name: accuracy, group: task, at_least: 0.9}\n");
    let said = exits(&cairn(&s, dir, &["eval", "suite", "put", "team", "quality", &suite]).await, 0);
    assert!(said.contains("team/quality"), "{said}");
    let said = exits(&cairn(&s, dir, &["eval", "suite", "list", "team"]).await, 0);
    assert!(said.contains("quality"), "{said}");
    let good = write(dir, "good.json", r#"{"accuracy": 0.95}"#);
    let said = exits(
        &cairn(
            &s,
            dir,
            &["eval", "submit", "team/m:1.0.0", &good, "--suite", "quality", "--config", r#"{"gpu":"a100"}"#],
        )
        .await,
        0,
    );
    assert!(said.contains("passes"), "{said}");
    let bad = write(dir, "bad.csv", "metric,value\naccuracy,0.5\n");
    let said = exits(&cairn(&s, dir, &["eval", "submit", "team/m:1", &bad, "--suite", "quality"]).await, 1);
    assert!(said.contains("accuracy"), "{said}");
    // Evaluations are judged and stored before the answer: no waiting.
    assert_eq!(s.client().evaluations("team/m", "1").await.unwrap().results.len(), 2);
    let said = exits(&cairn(&s, dir, &["eval", "list", "team/m:1"]).await, 0);
    assert!(said.contains("pass") && said.contains("FAIL"), "{said}");

    // The card, rendered as a Hugging Face README with front matter.
    let out = cairn(&s, dir, &["card", "show", "team/m:1.0.0", "--format", "huggingface"]).await;
    let readme = String::from_utf8_lossy(&out.stdout).into_owned();
    exits(&out, 0);
    assert!(readme.starts_with("---\n"), "{readme}");
    assert!(readme.contains("license: apache-2.0"), "{readme}");

    // Exceptions: requested for the version, listed as pending.
    let out = cairn(
        &s,
        dir,
        &[
            "exception",
            "request",
            "team/m:1",
            "--policy",
            "mit-only",
            "--justification",
            "apache-2.0 is approved by legal",
            "--json",
        ],
    )
    .await;
    exits(&out, 0);
    let e: api::PolicyException = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e.status, "requested");
    let said = exits(&cairn(&s, dir, &["exception", "list"]).await, 0);
    assert!(said.contains(&e.id), "{said}");
}
