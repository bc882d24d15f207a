//! Bad inputs, one per format: every error names the file, and the line and column when
//! the format has them; limits on size and type hold for every kind of input.

mod common;

use cairn_card::CardError;
use cairn_card::input::{self, InputPolicy};
use cairn_card::load::load_card;
use common::*;

fn p(s: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(s)
}

fn err_text(r: cairn_card::Result<impl std::fmt::Debug>) -> String {
    r.expect_err("must fail").to_string()
}

#[test]
fn malformed_files_report_file_line_and_column() {
    // Untagged values (a name or a list) report the file; other errors the exact place.
    let dir = tempfile::tempdir().expect("tmp");
    let policy = InputPolicy::default();

    let json = write(dir.path(), "r.json", "{\n  \"accuracy\": 0.9,\n  \"f1\": ,\n}");
    assert!(err_text(input::read_results(&p(&json), &policy)).contains("r.json:3:9"));

    let yaml = write(dir.path(), "r.yaml", "metrics:\n  - name: f1\n    value: [1, 2\n");
    let e = err_text(input::read_results(&p(&yaml), &policy));
    assert!(e.starts_with(&format!("{yaml}:")) && e.contains("invalid YAML"), "{e}");
    let yaml = write(dir.path(), "typed.yaml", "metrics:\n  - name: f1\n    value: high\n");
    let e = err_text(input::read_results(&p(&yaml), &policy));
    assert!(e.contains("typed.yaml:3:"), "{e}");

    let csv = write(dir.path(), "r.csv", "metric,value,dataset\naccuracy,0.9,a\nf1,NaN,a\n");
    assert!(err_text(input::read_results(&p(&csv), &policy)).contains("r.csv:3:2"));
    let csv = write(dir.path(), "empty.csv", "");
    assert!(err_text(input::read_results(&p(&csv), &policy)).contains("empty.csv"));
    let csv = write(dir.path(), "quote.csv", "metric,value\n\"accuracy,0.9\n");
    assert!(err_text(input::read_results(&p(&csv), &policy)).contains("quote.csv"));

    let cfg = write(dir.path(), "config.yaml", "name: m\nauthors: {a: 1}\n");
    let e = err_text(input::read_model_config(&p(&cfg), &policy));
    assert!(e.contains("config.yaml"), "{e}");
    let ds = write(
        dir.path(),
        "dataset.json",
        "{\"datasets\": [\"imdb\"], \"bias_analysis\": {\"fairness_metrics\": {\"dp\": \"low\"}}}",
    );
    assert!(err_text(input::read_dataset_info(&p(&ds), &policy)).contains("dataset.json:1:"));
    let log = write(dir.path(), "train.log", "nothing useful here\n");
    assert!(err_text(input::read_training_log(&p(&log), &policy)).contains("train.log"));

    let readme = write(dir.path(), "README.md", "# A card without front matter\n");
    assert!(err_text(load_card(&p(&readme), &policy)).contains("README.md:1:1"));
    let readme = write(dir.path(), "R2.md", "---\nlicense: [mit\n---\nbody\n");
    let e = err_text(load_card(&p(&readme), &policy));
    assert!(e.contains("R2.md:"), "{e}");
    let source = write(dir.path(), "card.yaml", "model:\n  name: m\n  licence: mit\n");
    let e = err_text(load_card(&p(&source), &policy));
    assert!(e.contains("card.yaml:2:") && e.contains("licence"), "{e}");
    let mct = write(dir.path(), "mct.json", "{\"model_details\": {\"name\": 3}}");
    assert!(err_text(load_card(&p(&mct), &policy)).contains("mct.json:1:"));
}

#[test]
fn type_and_size_limits_apply_to_every_input() {
    let dir = tempfile::tempdir().expect("tmp");
    let small = InputPolicy { max_bytes: 16 };
    let csv = write(dir.path(), "r.csv", "metric,value\naccuracy,0.9\n");
    assert!(matches!(input::read_results(&p(&csv), &small), Err(CardError::TooLarge { .. })));
    let json = write(dir.path(), "r.json", "{\"accuracy\": 0.9, \"f1\": 0.8}");
    assert!(matches!(input::read_results(&p(&json), &small), Err(CardError::TooLarge { .. })));
    let log = write(dir.path(), "t.log", "epoch: 1, loss: 0.5, accuracy: 0.8\n");
    assert!(matches!(input::read_training_log(&p(&log), &small), Err(CardError::TooLarge { .. })));
    assert!(matches!(load_card(&p(&example("card.yaml")), &small), Err(CardError::TooLarge { .. })));
    let scanner = cairn_card::secrets::Scanner::new();
    assert!(matches!(cairn_card::cli::scan_file(&scanner, &p(&csv), &small), Err(CardError::TooLarge { .. })));

    for name in ["r.txt", "r.exe", "r.tsv", "r"] {
        let f = write(dir.path(), name, "accuracy,0.9");
        assert!(
            matches!(input::read_results(&p(&f), &InputPolicy::default()), Err(CardError::BadExtension { .. })),
            "{name}"
        );
    }
    let cfg = write(dir.path(), "config.csv", "name,m\n");
    assert!(matches!(input::read_model_config(&p(&cfg), &InputPolicy::default()), Err(CardError::BadExtension { .. })));
    assert!(matches!(
        input::read_results(&dir.path().join("absent.json"), &InputPolicy::default()),
        Err(CardError::Io { .. })
    ));
}

#[test]
fn large_csv_is_aggregated_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("big.csv");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        writeln!(f, "metric,value,dataset,split,slice").expect("write");
        for i in 0..200_000u32 {
            writeln!(f, "accuracy,{},imdb,test,s{}", if i % 2 == 0 { "0.8" } else { "0.9" }, i % 4).expect("write");
        }
    }
    let card = input::read_results(&path, &InputPolicy { max_bytes: 100 << 20 }).expect("parse");
    assert_eq!(card.evaluation.metrics.len(), 4);
    for m in &card.evaluation.metrics {
        assert_eq!(m.samples, Some(50_000));
    }
}

#[test]
fn drift_update_keeps_comments_and_layout() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = write(
        dir.path(),
        "card.yaml",
        "# team card\nmodel:\n  name: m   # the name\nevaluation:\n  metrics:\n    - {name: accuracy, value: 0.91, dataset: d}   # from run 7\n    - name: loss\n      value: 0.30\n",
    );
    let new = write(
        dir.path(),
        "new.json",
        r#"[{"name": "accuracy", "value": 0.85, "dataset": "d"}, {"name": "loss", "value": 0.3}]"#,
    );
    let outcome = card(&["check-drift", &src, "--against", &new, "--update"]).expect("drift");
    assert_eq!(outcome, cairn_card::cli::Outcome::Ok);
    assert_eq!(
        read(&src),
        "# team card\nmodel:\n  name: m   # the name\nevaluation:\n  metrics:\n    - {name: accuracy, value: 0.85, dataset: d}   # from run 7\n    - name: loss\n      value: 0.30\n"
    );
}

#[test]
fn validate_reports_consistency_and_range_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("README.md").display().to_string();
    card(&["generate", &example("results.csv"), "--source", &example("card.yaml"), "--output", &out])
        .expect("generate");
    // Someone edits the body table by hand: metadata and body disagree.
    let tampered =
        read(&out).replace("| accuracy | imdb | test | — | 0.923 |", "| accuracy | imdb | test | — | 0.99 |");
    std::fs::write(&out, tampered).expect("write");
    assert_eq!(card(&["validate", &out]).expect("runs"), cairn_card::cli::Outcome::CheckFailed);
    let loaded = load_card(std::path::Path::new(&out), &InputPolicy::default()).expect("load");
    let report = cairn_card::validate::validate(&loaded, &[cairn_card::validate::Standard::Huggingface], 0.8, &[]);
    assert!(report.standards[0].findings.iter().any(|f| f.rule_id == "CARD004"));

    let bad = write(
        dir.path(),
        "card.yaml",
        "model:\n  name: m\nevaluation:\n  metrics:\n    - {name: accuracy, value: 1.7, dataset: nowhere}\n",
    );
    let loaded = load_card(std::path::Path::new(&bad), &InputPolicy::default()).expect("load");
    let report = cairn_card::validate::validate(&loaded, &[cairn_card::validate::Standard::Google], 0.0, &[]);
    let ids: Vec<_> = report.standards[0].findings.iter().map(|f| f.rule_id.as_str()).collect();
    assert!(ids.contains(&"CARD002") && ids.contains(&"CARD003"), "{ids:?}");
    assert!(!report.valid);
    let sarif = cairn_card::validate::to_sarif(&report);
    assert!(sarif["runs"][0]["results"].as_array().is_some_and(|r| !r.is_empty()));
}

#[test]
fn drift_update_adds_new_metrics_to_card_sources() {
    let dir = tempfile::tempdir().expect("tmp");
    let new = write(
        dir.path(),
        "new.json",
        r#"[{"name": "accuracy", "value": 0.85, "dataset": "d"}, {"name": "f1", "value": 0.8, "dataset": "d"}]"#,
    );
    let cases = [
        (
            "block.yaml",
            "model:\n  name: m\nevaluation:\n  metrics:\n    - name: accuracy\n      value: 0.91\n      dataset: d\n",
        ),
        ("empty.yaml", "model:\n  name: m\nevaluation:\n  metrics: []   # filled by check-drift\n"),
        ("none.yaml", "model:\n  name: m\n"),
    ];
    for (name, text) in cases {
        let src = write(dir.path(), name, text);
        card(&["check-drift", &src, "--against", &new, "--update"]).expect("update");
        let loaded =
            load_card(&p(&src), &InputPolicy::default()).unwrap_or_else(|e| panic!("{name}: {e}\n{}", read(&src)));
        let mut got: Vec<_> = loaded.card.evaluation.metrics.iter().map(|m| (m.name.clone(), m.value)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, vec![("accuracy".to_string(), 0.85), ("f1".to_string(), 0.8)], "{name}:\n{}", read(&src));
        assert!(read(&src).starts_with("model:\n  name: m\n"), "{name}: the rest is kept");
    }
}

#[test]
fn third_party_hub_cards_are_read() {
    let dir = tempfile::tempdir().expect("tmp");
    let readme = write(
        dir.path(),
        "README.md",
        "---\nlanguage:\n- en\nlicense: mit\nbase_model:\n- distilbert-base-uncased\nwidget:\n- text: I love this\nco2_eq_emissions:\n  emissions: 10\nmodel-index:\n- name: distilbert-sst2\n  results:\n  - task:\n      type: text-classification\n    dataset:\n      name: glue\n      type: glue\n      config: sst2\n      split: validation\n    metrics:\n    - type: accuracy\n      value: 0.91\n      verified: false\n    - type: f1\n      value: \"0.88 ± 0.01\"\n---\n\n# distilbert-sst2\n\nA fine-tuned version of distilbert on glue.\n\n## Intended uses & limitations\n\nMore information needed\n",
    );
    let loaded = load_card(&p(&readme), &InputPolicy::default()).expect("load");
    let c = &loaded.card;
    assert_eq!(c.model.name.as_deref(), Some("distilbert-sst2"));
    assert_eq!(c.model.description.as_deref(), Some("A fine-tuned version of distilbert on glue."));
    assert_eq!(c.model.base_model.as_deref(), Some("distilbert-base-uncased"));
    assert!(c.intended_use.description.is_none(), "placeholder text is not a fact");
    let values: Vec<_> = c.evaluation.metrics.iter().map(|m| (m.name.as_str(), m.value, m.split.as_deref())).collect();
    assert_eq!(values, vec![("accuracy", 0.91, Some("validation")), ("f1", 0.88, Some("validation"))]);
    assert!(loaded.body_metrics.is_none(), "no results table: nothing to compare");
}
