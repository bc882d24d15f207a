//! `cairn scan` offline (a directory or a file, with the scanner the server runs) and online
//! (a version's stored results, and a rescan), and the scan line `cairn push` prints.

mod common;

use common::*;

use cairn_test_utils::{Backend, TestServer};

/// `posix.system("id")` in protocol 2, as `pickle.dumps` writes it on Linux.
const EVIL: &[u8] = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.";
const KERAS_LAMBDA: &[u8] = b"\x89HDF\r\n\x1a\n{\"class_name\": \"Lambda\", \"config\": {}}";

#[test]
fn offline_scans_of_directories_and_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir_all(dir.join("weights")).unwrap();
    std::fs::write(dir.join("weights/model.pkl"), EVIL).unwrap();
    std::fs::write(dir.join("README.md"), "# model\n").unwrap();
    let out = run(tmp.path(), &["scan", dir.to_str().unwrap()]);
    let said = exits(&out, 1);
    assert!(said.contains("weights/model.pkl") && said.contains("posix.system") && said.contains("CRITICAL"), "{said}");

    let out = run(tmp.path(), &["scan", dir.to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["summary"]["findings"]["critical"], 1, "{json}");
    assert_eq!(json["files"].as_array().unwrap().len(), 2);

    // Findings below --fail-on pass; the same file fails with the default.
    let h5 = tmp.path().join("model.h5");
    std::fs::write(&h5, KERAS_LAMBDA).unwrap();
    exits(&run(tmp.path(), &["scan", h5.to_str().unwrap(), "--fail-on", "high"]), 0);
    exits(&run(tmp.path(), &["scan", h5.to_str().unwrap()]), 1);

    std::fs::remove_file(dir.join("weights/model.pkl")).unwrap();
    let said = exits(&run(tmp.path(), &["scan", dir.to_str().unwrap()]), 0);
    assert!(said.contains("findings: none"), "{said}");

    let said = exits(&run(tmp.path(), &["scan", "no/such:path:"]), 2);
    assert!(said.contains("neither a file or directory"), "{said}");
    let said = exits(&run(tmp.path(), &["scan", dir.to_str().unwrap(), "--fail-on", "severe"]), 2);
    assert!(said.contains("unknown severity"), "{said}");
    exits(&run(tmp.path(), &["scan", dir.to_str().unwrap(), "--rescan"]), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_prints_the_scan_and_scan_shows_a_version() {
    let Some(s) = TestServer::start(Backend::Sqlite, "push_prints_the_scan_and_scan_shows_a_version").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.pkl"), EVIL).unwrap();
    exits(&cairn(tmp.path(), &s, &["models", "create", "team/m"]).await, 0);
    let said = exits(&cairn(tmp.path(), &s, &["push", "team/m", dir.to_str().unwrap(), "-q"]).await, 0);
    assert!(said.contains("Scan: findings (1 critical) in model.pkl; details: cairn scan team/m:1"), "{said}");

    let said = exits(&cairn(tmp.path(), &s, &["scan", "team/m:1"]).await, 1);
    assert!(said.contains("posix.system"), "{said}");
    let out = cairn(tmp.path(), &s, &["scan", "team/m:1", "--rescan", "--json"]).await;
    exits(&out, 1);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((json["name"].as_str(), json["version"].as_i64()), (Some("m"), Some(1)), "{json}");
    let bom_file = tmp.path().join("bom.json");
    exits(&cairn(tmp.path(), &s, &["sbom", "team/m:1", "-o", bom_file.to_str().unwrap()]).await, 0);
    let bom: serde_json::Value = serde_json::from_slice(&std::fs::read(&bom_file).unwrap()).unwrap();
    assert_eq!(bom["metadata"]["component"]["components"][0]["name"], "model.pkl", "{bom}");
    exits(&cairn(tmp.path(), &s, &["sbom", "team/m:9"]).await, 2);
    let said = exits(&cairn(tmp.path(), &s, &["scan", "team/m:7"]).await, 2);
    assert!(said.contains("not_found") || said.contains("does not exist"), "{said}");
    s.stop().await;
}
