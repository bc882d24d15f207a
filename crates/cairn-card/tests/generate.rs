//! `cairn card generate` end to end (in-process): every format, determinism, merging,
//! custom templates, secrets.

mod common;

use cairn_card::cli::Outcome;
use cairn_card::input::InputPolicy;
use cairn_card::load::{CardKind, load_card};
use common::*;

const MITCHELL_SECTIONS: &[&str] = &[
    "Model Details",
    "Intended Use",
    "Factors",
    "Metrics",
    "Evaluation Data",
    "Training Data",
    "Quantitative Analyses",
    "Ethical Considerations",
    "Caveats and Recommendations",
];

fn generate(dir: &std::path::Path, format: &str, name: &str) -> String {
    let out = dir.join(name).display().to_string();
    let outcome = card(&[
        "generate",
        &example("results.csv"),
        "--source",
        &example("card.yaml"),
        "--format",
        format,
        "--output",
        &out,
    ])
    .expect("generate");
    assert_eq!(outcome, Outcome::Ok);
    out
}

#[test]
fn huggingface_card_has_front_matter_model_index_and_all_sections() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = generate(dir.path(), "huggingface", "README.md");
    let text = read(&out);
    assert!(text.starts_with("---\n"));
    for key in [
        "license: apache-2.0",
        "language:",
        "tags:",
        "datasets:",
        "metrics:",
        "base_model:",
        "pipeline_tag: text-classification",
        "library_name: transformers",
        "model-index:",
    ] {
        assert!(text.contains(key), "front matter lacks {key}\n{text}");
    }
    for section in MITCHELL_SECTIONS {
        assert!(
            text.contains(&format!("# {section}"))
                || text.contains(&format!("## {section}"))
                || text.contains(&format!("### {section}"))
                || text.contains(&format!("#### {section}")),
            "missing section {section}"
        );
    }
    // Read back: every metric survives with its dataset, split and slice.
    let loaded = load_card(std::path::Path::new(&out), &InputPolicy::default()).expect("load");
    assert_eq!(loaded.kind, CardKind::HuggingFace);
    let mut metrics: Vec<_> = loaded.card.evaluation.metrics.iter().map(|m| (m.label(), m.value)).collect();
    metrics.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        metrics,
        vec![
            ("accuracy [imdb/test/long_reviews]".to_string(), 0.94),
            ("accuracy [imdb/test/short_reviews]".to_string(), 0.88),
            ("accuracy [imdb/test]".to_string(), 0.923),
            ("f1 [imdb/test]".to_string(), 0.921),
        ]
    );
    assert_eq!(loaded.body_metrics.as_ref().map(Vec::len), Some(4));
}

#[test]
fn output_is_byte_identical_across_runs() {
    let dir = tempfile::tempdir().expect("tmp");
    for format in ["huggingface", "google", "eu-ai-act", "eu-cra", "html", "json"] {
        let a = read(&generate(dir.path(), format, &format!("a.{format}")));
        let b = read(&generate(dir.path(), format, &format!("b.{format}")));
        assert_eq!(a, b, "{format} output differs between runs");
        assert!(!a.contains("{{") && !a.contains("{%"), "{format} output has template syntax left");
    }
}

#[test]
fn markdown_formats_cover_the_nine_sections() {
    let dir = tempfile::tempdir().expect("tmp");
    for format in ["eu-ai-act", "eu-cra"] {
        let text = read(&generate(dir.path(), format, &format!("{format}.md")));
        for section in MITCHELL_SECTIONS {
            assert!(text.contains(&format!("### {section}")), "{format}: missing {section}");
        }
    }
}

#[test]
fn eu_ai_act_lists_every_annex_iv_item_and_gaps() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("aia.md").display().to_string();
    card(&[
        "generate",
        &example("eval.json"),
        "--source",
        &example("minimal.yaml"),
        "--format",
        "eu-ai-act",
        "--output",
        &out,
    ])
    .expect("generate");
    let text = read(&out);
    for item in [
        "1(a)", "1(b)", "1(c)", "1(d)", "1(e)", "1(f)", "1(g)", "1(h)", "2(a)", "2(b)", "2(c)", "2(d)", "2(e)", "2(f)",
        "2(g)", "2(h)", "## 3 ", "## 4 ", "## 5 ", "## 6 ", "## 7 ", "## 8 ", "## 9 ",
    ] {
        assert!(text.contains(item), "Annex IV item {item} missing");
    }
    assert!(text.contains("**GAP**"));
    assert!(text.contains("## Gaps"));
    assert!(text.contains("regulatory.human_oversight"));
    // A complete card has no gaps.
    let full = dir.path().join("full.md").display().to_string();
    card(&["generate", "--source", &example("card.yaml"), "--format", "eu-ai-act", "--output", &full])
        .expect("generate");
    let text = read(&full);
    assert!(!text.contains("**GAP**"), "{text}");
    assert!(text.contains("No gaps"));
}

#[test]
fn html_is_self_contained_and_escaped() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = write(
        dir.path(),
        "card.yaml",
        "model:\n  name: \"<script>alert(1)</script>\"\n  description: \"a & b <img src=x onerror=alert(1)>\"\n  repository: \"javascript:alert(1)\"\n",
    );
    let out = dir.path().join("card.html").display().to_string();
    card(&["generate", "--source", &src, "--format", "html", "--output", &out]).expect("generate");
    let html = read(&out);
    assert!(!html.contains("<script>"));
    assert!(!html.contains("<img"));
    assert!(html.contains("&lt;script&gt;"));
    assert!(!html.contains("javascript:alert"), "unsafe URL rendered as a link");
    assert!(!html.contains("src=\"http") && !html.contains("<link"), "external resources");
}

#[test]
fn flags_override_source_which_overrides_results() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = write(
        dir.path(),
        "card.yaml",
        "model:\n  name: from-source\n  license: mit\nevaluation:\n  metrics:\n    - {name: accuracy, value: 0.5, dataset: imdb}\n",
    );
    let out = dir.path().join("card.json").display().to_string();
    card(&[
        "generate",
        &example("eval.json"),
        "--source",
        &src,
        "--license",
        "apache-2.0",
        "--authors",
        "A, B",
        "--training",
        &example("training.log"),
        "--dataset",
        &example("dataset.json"),
        "--config",
        &example("config.yaml"),
        "--format",
        "json",
        "--output",
        &out,
    ])
    .expect("generate");
    let c: cairn_card::Card = serde_json::from_str(&read(&out)).expect("json");
    assert_eq!(c.model.name.as_deref(), Some("from-source"));
    assert_eq!(c.model.license.as_deref(), Some("apache-2.0"));
    assert_eq!(c.model.authors, ["A", "B"]);
    assert_eq!(c.model.version.as_deref(), Some("2.1.0"), "config fills what the source leaves empty");
    let acc = c.evaluation.metrics.iter().find(|m| m.name == "accuracy").expect("accuracy");
    assert_eq!(acc.value, 0.5, "the source wins over the results file");
    assert!(c.evaluation.metrics.iter().any(|m| m.name == "roc_auc" && m.confidence_interval == Some([0.95, 0.98])));
    assert_eq!(c.training.epochs, Some(3));
    assert_eq!(c.training.final_metrics["val_accuracy"], 0.923);
    assert_eq!(c.ethics.fairness_metrics["accuracy_gap_short_long"], 0.043);
}

#[test]
fn google_json_round_trips() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = generate(dir.path(), "google", "mct.json");
    let v: serde_json::Value = serde_json::from_str(&read(&out)).expect("json");
    assert_eq!(v["schema_version"], "0.0.2");
    assert!(v["quantitative_analysis"]["performance_metrics"].as_array().is_some_and(|a| a.len() == 4));
    assert!(v["quantitative_analysis"]["performance_metrics"][0]["value"].is_string());
    let loaded = load_card(std::path::Path::new(&out), &InputPolicy::default()).expect("load");
    assert_eq!(loaded.kind, CardKind::Mct);
    assert_eq!(loaded.card.evaluation.metrics.len(), 4);
    assert!(
        loaded
            .card
            .evaluation
            .metrics
            .iter()
            .any(|m| m.slice.as_deref() == Some("short_reviews") && m.dataset.as_deref() == Some("imdb"))
    );
}

#[test]
fn custom_templates_include_builtins_and_dirs_override() {
    let dir = tempfile::tempdir().expect("tmp");
    let tpl = write(
        dir.path(),
        "org.md.j2",
        "# {{ card.model.name }} (org)\n{% include \"cairn/mitchell.md.j2\" %}\n{% include \"footer.md.j2\" %}\n",
    );
    write(dir.path(), "footer.md.j2", "Approved by the model risk committee.\n");
    let out = dir.path().join("out.md").display().to_string();
    card(&[
        "generate",
        &example("eval.json"),
        "--source",
        &example("minimal.yaml"),
        "--template",
        &tpl,
        "--output",
        &out,
    ])
    .expect("generate");
    let text = read(&out);
    assert!(text.starts_with("# sentiment-classifier (org)"));
    assert!(text.contains("### Quantitative Analyses"));
    assert!(text.contains("Approved by the model risk committee."));

    // An organisation overrides one built-in template by name.
    let org = dir.path().join("org");
    std::fs::create_dir(&org).expect("mkdir");
    std::fs::write(org.join("mitchell.md.j2"), "ORG MITCHELL\n").expect("write");
    let out2 = dir.path().join("out2.md").display().to_string();
    card(&[
        "generate",
        &example("eval.json"),
        "--format",
        "eu-ai-act",
        "--template-dir",
        &org.display().to_string(),
        "--output",
        &out2,
    ])
    .expect("generate");
    assert!(read(&out2).contains("ORG MITCHELL"));
}

#[test]
fn hostile_templates_are_stopped() {
    let dir = tempfile::tempdir().expect("tmp");
    let tpl = write(
        dir.path(),
        "loop.md.j2",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    );
    let out = dir.path().join("o.md").display().to_string();
    let err = card(&["generate", &example("eval.json"), "--template", &tpl, "--output", &out]).expect_err("fuel");
    assert!(err.to_string().contains("loop.md.j2"), "{err}");
    let tpl = write(dir.path(), "escape.md.j2", "{% include \"../../etc/passwd\" %}");
    assert!(card(&["generate", &example("eval.json"), "--template", &tpl, "--output", &out]).is_err());
    let bad = write(dir.path(), "bad.md.j2", "{% if %}");
    let err = card(&["generate", &example("eval.json"), "--template", &bad, "--output", &out]).expect_err("syntax");
    assert!(err.to_string().contains("bad.md.j2"));
}

#[test]
fn secrets_block_generate_unless_allowed_and_are_not_echoed() {
    let dir = tempfile::tempdir().expect("tmp");
    let token = fake_github_token();
    let src = write(dir.path(), "card.yaml", &format!("model:\n  name: m\n  description: \"push with {token}\"\n"));
    let out = dir.path().join("README.md");
    let outcome = card(&["generate", &example("eval.json"), "--source", &src, "--output", &out.display().to_string()])
        .expect("runs");
    assert_eq!(outcome, Outcome::CheckFailed);
    assert!(!out.exists(), "nothing may be written when a secret is found");
    let outcome = card(&[
        "generate",
        &example("eval.json"),
        "--source",
        &src,
        "--allow-secret",
        "github-token",
        "--output",
        &out.display().to_string(),
    ])
    .expect("runs");
    assert_eq!(outcome, Outcome::Ok);
    assert!(card(&["generate", &example("eval.json"), "--allow-secret", "no-such-rule"]).is_err());
}

#[test]
fn secrets_in_results_files_are_found_by_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let csv = write(
        dir.path(),
        "r.csv",
        &format!(
            "metric,value\naccuracy,0.9\n# {}\n",
            format_args!("aws_secret_access_key = {}", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8aB3dE5f")
        ),
    );
    let scanner = cairn_card::secrets::Scanner::new();
    let findings =
        cairn_card::cli::scan_file(&scanner, std::path::Path::new(&csv), &InputPolicy::default()).expect("scan");
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].line, 3);
    assert!(!findings[0].to_string().contains("wJalrXUtnFEMI"));
}
