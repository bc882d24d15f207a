//! Cairn's scanner against `modelscan` (PyPI), on the same files: malicious and benign
//! pickles, joblib, NumPy, PyTorch (zip and legacy), Keras HDF5 and `.keras` files and a
//! safetensors file, all written by `tests/modelscan/make_corpus.py` with the real libraries.
//!
//! Cairn must flag every file modelscan flags, at least as severely and naming the same
//! imports; it must flag every malicious file (also those modelscan cannot read), and find
//! nothing in any benign file.
//!
//! Needs `CAIRN_TEST_SCAN_PYTHON`, the python of the venv `.ci/setup-scan-python.sh` creates
//! (modelscan, NumPy, h5py, joblib, safetensors).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_scan::{FileSource, Scanner, Severity, Status};

fn python() -> Option<PathBuf> {
    match std::env::var_os("CAIRN_TEST_SCAN_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var("CAIRN_REQUIRE_ALL_TESTS").as_deref() == Ok("1") => {
            panic!(
                "CAIRN_REQUIRE_ALL_TESTS=1 but CAIRN_TEST_SCAN_PYTHON is unset: run .ci/setup-scan-python.sh and export it"
            )
        }
        None => {
            eprintln!("SKIPPED: set CAIRN_TEST_SCAN_PYTHON (see .ci/setup-scan-python.sh) to compare with modelscan");
            None
        }
    }
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success() || out.status.code() == Some(1) || out.status.code() == Some(2),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn severity(s: &str) -> Severity {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn cairn_flags_everything_modelscan_flags_and_nothing_benign() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modelscan/make_corpus.py");
    let out = run(Command::new(&py).arg(&script).arg(&corpus));
    assert!(out.status.success(), "make_corpus.py: {}", String::from_utf8_lossy(&out.stderr));

    // modelscan, from the same venv, with its JSON report.
    let report_file = dir.path().join("modelscan.json");
    let modelscan = py.parent().unwrap().join("modelscan");
    run(Command::new(&modelscan).args(["scan", "-r", "json", "-o"]).arg(&report_file).arg("-p").arg(&corpus));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_file).unwrap()).unwrap();
    // file name → (worst severity, imports "module.operator" for pickle issues).
    let mut flagged: BTreeMap<String, (Severity, Vec<String>)> = BTreeMap::new();
    for issue in report["issues"].as_array().unwrap() {
        let source = issue["source"].as_str().unwrap();
        let file = source.split(':').next().unwrap().to_string();
        let sev = severity(issue["severity"].as_str().unwrap());
        let entry = flagged.entry(file).or_insert((sev, Vec::new()));
        entry.0 = entry.0.max(sev);
        if issue["scanner"].as_str().unwrap().contains("Pickle") {
            entry.1.push(format!("{}.{}", issue["module"].as_str().unwrap(), issue["operator"].as_str().unwrap()));
        }
    }
    assert!(flagged.len() >= 18, "the corpus should give modelscan plenty to flag: {flagged:?}");

    let scanner = Scanner::new();
    let mut files: Vec<String> =
        std::fs::read_dir(&corpus).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert!(files.len() >= 30);
    let mut checked_against_modelscan = 0;
    for name in &files {
        let src = FileSource::open(&corpus.join(name)).unwrap();
        let r = scanner.scan(name, &src);
        if let Some((worst, imports)) = flagged.get(name) {
            checked_against_modelscan += 1;
            let ours = r.max_severity().unwrap_or_else(|| panic!("{name}: modelscan flags it, Cairn does not: {r:?}"));
            assert!(ours >= *worst, "{name}: Cairn says {ours}, modelscan {worst}");
            for import in imports {
                assert!(
                    r.findings.iter().any(|f| &f.subject == import),
                    "{name}: modelscan flags {import}, Cairn's findings are {:?}",
                    r.findings
                );
            }
        }
        if name.starts_with("evil_") {
            assert!(!r.findings.is_empty(), "{name} is malicious and Cairn finds nothing: {r:?}");
        } else {
            assert!(name.starts_with("benign_"), "{name}");
            assert!(r.findings.is_empty(), "{name} is benign, yet: {:?}", r.findings);
            assert_ne!(r.status, Status::Incomplete, "{name}: {r:?}");
        }
    }
    assert_eq!(checked_against_modelscan, flagged.len(), "every file modelscan flags was compared");
}
