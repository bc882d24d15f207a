//! Real consumers parse what we generate: `huggingface_hub.ModelCard.load` reads the
//! README, and the official Model Card Toolkit v0.0.2 JSON schema accepts the MCT JSON.
//!
//! Needs `CAIRN_TEST_PYTHON`, the python of the venv made by `.ci/setup-card-python.sh`.
//! Unset: the tests print SKIPPED and pass, unless `CAIRN_REQUIRE_ALL_TESTS=1`, when they fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn python() -> Option<PathBuf> {
    match std::env::var_os("CAIRN_TEST_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            if std::env::var("CAIRN_REQUIRE_ALL_TESTS").as_deref() == Ok("1") {
                panic!(
                    "CAIRN_REQUIRE_ALL_TESTS=1 but CAIRN_TEST_PYTHON is unset: run .ci/setup-card-python.sh and export CAIRN_TEST_PYTHON"
                );
            }
            println!(
                "SKIPPED: set CAIRN_TEST_PYTHON to the python printed by .ci/setup-card-python.sh to run the real-consumer card tests"
            );
            None
        }
    }
}

fn run_python(py: &Path, script: &str, args: &[&str]) -> String {
    let out = Command::new(py).arg("-c").arg(script).args(args).output().expect("run python");
    assert!(
        out.status.success(),
        "python failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The schema the setup script extracted, next to the venv's python.
fn mct_schema(py: &Path) -> PathBuf {
    let venv = py.parent().and_then(Path::parent).expect("python lives in VENV/bin");
    let schema = venv.join("share/mct/model_card.schema.json");
    assert!(schema.exists(), "{} missing: run .ci/setup-card-python.sh", schema.display());
    schema
}

const HF_LOAD: &str = r####"
import json, sys
from huggingface_hub import ModelCard
card = ModelCard.load(sys.argv[1])
data = card.data
out = {
    "model_name": data.model_name,
    "license": data.license,
    "pipeline_tag": data.pipeline_tag,
    "library_name": data.library_name,
    "base_model": data.base_model,
    "datasets": data.datasets,
    "eval_results": [
        {"task_type": r.task_type, "dataset_type": r.dataset_type, "dataset_name": r.dataset_name,
         "dataset_split": r.dataset_split, "metric_type": r.metric_type, "metric_value": r.metric_value,
         "metric_args": r.metric_args}
        for r in (data.eval_results or [])
    ],
    "text_has_sections": all(s in card.text for s in ["## Model Details", "## Evaluation", "### Quantitative Analyses"]),
}
print(json.dumps(out, sort_keys=True))
"####;

#[test]
fn huggingface_hub_loads_the_generated_readme() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("README.md").display().to_string();
    card(&["generate", &example("results.csv"), "--source", &example("card.yaml"), "--output", &out])
        .expect("generate");
    let parsed: serde_json::Value = serde_json::from_str(&run_python(&py, HF_LOAD, &[&out])).expect("json from python");
    assert_eq!(parsed["model_name"], "sentiment-classifier");
    assert_eq!(parsed["license"], "apache-2.0");
    assert_eq!(parsed["pipeline_tag"], "text-classification");
    assert_eq!(parsed["library_name"], "transformers");
    assert_eq!(parsed["base_model"], "bert-base-uncased");
    assert_eq!(parsed["text_has_sections"], true);
    let results = parsed["eval_results"].as_array().expect("eval_results");
    let mut got: Vec<(String, String, String, f64, Option<String>)> = results
        .iter()
        .map(|r| {
            (
                r["metric_type"].as_str().unwrap_or_default().to_string(),
                r["dataset_name"].as_str().unwrap_or_default().to_string(),
                r["dataset_type"].as_str().unwrap_or_default().to_string(),
                r["metric_value"].as_f64().unwrap_or(f64::NAN),
                r["metric_args"]["slice"].as_str().map(str::to_string),
            )
        })
        .collect();
    got.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let want = vec![
        (
            "accuracy".to_string(),
            "imdb".to_string(),
            "stanfordnlp/imdb".to_string(),
            0.88,
            Some("short_reviews".to_string()),
        ),
        ("accuracy".to_string(), "imdb".to_string(), "stanfordnlp/imdb".to_string(), 0.923, None),
        (
            "accuracy".to_string(),
            "imdb".to_string(),
            "stanfordnlp/imdb".to_string(),
            0.94,
            Some("long_reviews".to_string()),
        ),
        ("f1".to_string(), "imdb".to_string(), "stanfordnlp/imdb".to_string(), 0.921, None),
    ];
    assert_eq!(got, want);
    assert!(results.iter().all(|r| r["task_type"] == "text-classification" && r["dataset_split"] == "test"));
}

#[test]
fn huggingface_hub_loads_a_minimal_readme() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("README.md").display().to_string();
    // Flat results without a dataset: model-index still needs one, and gets "unspecified".
    let flat = write(dir.path(), "r.json", r#"{"accuracy": 0.9, "loss": 0.31}"#);
    card(&["generate", &flat, "--model-name", "tiny", "--output", &out]).expect("generate");
    let parsed: serde_json::Value = serde_json::from_str(&run_python(&py, HF_LOAD, &[&out])).expect("json");
    assert_eq!(parsed["model_name"], "tiny");
    assert_eq!(parsed["eval_results"].as_array().map(Vec::len), Some(2));
}

const MCT_VALIDATE: &str = r####"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
doc = json.load(open(sys.argv[2]))
jsonschema.validate(doc, schema, cls=jsonschema.Draft7Validator, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
print(len(doc["quantitative_analysis"]["performance_metrics"]))
"####;

#[test]
fn mct_json_validates_against_the_official_schema() {
    let Some(py) = python() else { return };
    let schema = mct_schema(&py);
    let dir = tempfile::tempdir().expect("tmp");
    for (name, args) in [
        ("full.json", vec!["generate", "--source", &example("card.yaml") as &str]),
        ("minimal.json", vec!["generate", &example("eval.json") as &str, "--source", &example("minimal.yaml")]),
    ] {
        let out = dir.path().join(name).display().to_string();
        let mut a = args.clone();
        a.extend(["--format", "google", "--output", &out]);
        card(&a).expect("generate");
        let count = run_python(&py, MCT_VALIDATE, &[&schema.display().to_string(), &out]);
        assert!(count.trim().parse::<usize>().expect("count") > 0);
    }
    // The validator is real: a document that breaks the schema is rejected.
    let bad = write(
        dir.path(),
        "bad.json",
        r#"{"model_details": {"name": "x"}, "unexpected": 1, "quantitative_analysis": {"performance_metrics": []}}"#,
    );
    let out = Command::new(&py).arg("-c").arg(MCT_VALIDATE).arg(&schema).arg(&bad).output().expect("python");
    assert!(!out.status.success(), "schema accepted an invalid document");
}
