//! `cairn evidence export` against a real server and `cairn evidence verify` offline: a bundle
//! that verifies, one with a byte changed that does not (exit 1), and bad input (exit 2).

mod common;

use common::*;

use cairn_test_utils::{Backend, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_verify_offline() {
    let Some(s) = TestServer::start(Backend::Sqlite, "export_then_verify_offline").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    s.push("team/m", &[("weights.bin", b"weights")]).await;
    std::fs::write(t.join("registry.pub"), s.state.signing_key.public().to_pem()).unwrap();
    std::fs::write(t.join("other.pub"), cairn_audit::SigningKey::generate().public().to_pem()).unwrap();

    let out = cairn(t, &s, &["evidence", "export", "team/m:1", "-o", "b.tar.gz"]).await;
    assert!(exits(&out, 0).contains("Wrote b.tar.gz"), "{}", text(&out));
    assert!(!t.join("b.part").exists(), "no partial file is left");
    let out = cairn(t, &s, &["evidence", "verify", "b.tar.gz", "--public-key", "registry.pub"]).await;
    let said = exits(&out, 0);
    assert!(said.contains("team/m:1") && said.contains("VERIFIED"), "{said}");
    let out = cairn(t, &s, &["evidence", "verify", "b.tar.gz", "--public-key", "registry.pub", "--json"]).await;
    let report: serde_json::Value = serde_json::from_str(&exits(&out, 0)).unwrap();
    assert_eq!(report["ok"], true);

    // The bundle's audit trail is an ordinary export: the decision reads out of it offline.
    let untar = std::process::Command::new("tar").args(["-xzf", "b.tar.gz", "audit.jsonl"]).current_dir(t).status();
    assert!(untar.unwrap().success());
    let out = run(t, &["audit", "explain", "team/m:1", "--file", "audit.jsonl", "--public-key", "registry.pub"]);
    assert!(exits(&out, 0).contains("# How team/m:1 was decided"), "{}", text(&out));

    // Another key, a changed byte: exit 1.
    let out = cairn(t, &s, &["evidence", "verify", "b.tar.gz", "--public-key", "other.pub"]).await;
    assert!(exits(&out, 1).contains("FAIL"), "{}", text(&out));
    let mut bytes = std::fs::read(t.join("b.tar.gz")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(t.join("tampered.tar.gz"), &bytes).unwrap();
    let out = cairn(t, &s, &["evidence", "verify", "tampered.tar.gz", "--public-key", "registry.pub"]).await;
    exits(&out, 1);
    // Bad input: exit 2.
    let out = cairn(t, &s, &["evidence", "verify", "missing.tar.gz", "--public-key", "registry.pub"]).await;
    exits(&out, 2);
    let out = cairn(t, &s, &["evidence", "verify", "b.tar.gz"]).await;
    exits(&out, 2);
    let out = cairn(t, &s, &["evidence", "export", "team/m:7"]).await;
    exits(&out, 2);
    s.stop().await;
}
