//! Evidence bundles on SQLite and PostgreSQL: what a bundle holds, that it verifies offline
//! with the registry's public key alone, and that every kind of tampering — a changed byte, a
//! changed, missing or extra member, a rewritten index, another key, links and path
//! traversal — fails verification. Also who may export one.

use std::collections::BTreeMap;
use std::io::Read as _;

use cairn_audit::PublicKey;
use cairn_audit::evidence::{BundleError, verify};
use cairn_test_utils::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const CARD: &str = "model:\n  name: m\n  description: A model with evidence.\n  license: apache-2.0\n";

async fn bundle(s: &TestServer, token: &str, path: &str) -> (StatusCode, Vec<u8>) {
    let resp = reqwest::Client::new().get(format!("{}{path}", s.url)).bearer_auth(token).send().await.unwrap();
    let st = resp.status();
    if st == StatusCode::OK {
        assert_eq!(resp.headers()["content-type"], "application/gzip");
    }
    (st, resp.bytes().await.unwrap().to_vec())
}

/// The members of a bundle, in order.
fn members(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_str().unwrap().to_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

/// A bundle made of `members` as given (names unchecked), optionally with a symlink.
fn pack(members: &[(String, Vec<u8>)], link: Option<&str>) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Set the name in the header directly: the builder would refuse `..`.
        let raw = &mut h.as_old_mut().name;
        raw.fill(0);
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    if let Some(target) = link {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "card/evil", target).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// The archive a gzip file decompresses to, if it does.
fn inflate(gz: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut out).ok()?;
    Some(out)
}

fn fails(bytes: &[u8], key: &PublicKey, why: &str) {
    match verify(bytes, std::slice::from_ref(key)) {
        Ok(r) => assert!(!r.ok(), "{why}: verified although it should not: {r:?}"),
        Err(BundleError::Unsafe(_) | BundleError::Io(_)) => {}
    }
}

async fn bundles_verify_and_tampering_fails(s: &TestServer) {
    let v = s.push("team/m", &[("weights.bin", b"weights"), ("config.json", b"{}")]).await;
    let (st, _) = s
        .call(
            Method::PUT,
            "/api/v1/models/team/m/versions/1/card",
            Some(json!({"source_name": "card.yaml", "source": CARD})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .call(
            Method::POST,
            "/api/v1/models/team/m/versions/1/lineage",
            Some(json!({"inputs": [{"kind": "dataset", "name": "web"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let key = s.state.signing_key.public();

    let (st, bytes) = bundle(s, &s.token, "/api/v1/models/team/m/versions/1/evidence").await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let got = members(&bytes);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "index.json",
        "index.sig",
        "manifest.json",
        "signatures.json",
        "lifecycle.json",
        "policy-results.json",
        "evaluations.json",
        "lineage.json",
        "scan.json",
        "sbom.cdx.json",
        "card/README.md",
        "card/model-card-toolkit.json",
        "card/eu-ai-act-annex-iv.md",
        "card/card.html",
        "audit.jsonl",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    assert_eq!(&names[..2], ["index.json", "index.sig"]);
    let index: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!((index["model"].as_str(), index["version"].as_i64()), (Some("team/m"), Some(1)));
    assert_eq!(index["digest"], v["digest"]);
    let audit = String::from_utf8(got.iter().find(|(n, _)| n == "audit.jsonl").unwrap().1.clone()).unwrap();
    assert!(audit.contains("version.lineage.add") && audit.contains("\"checkpoint\""), "{audit}");

    let report = verify(&bytes[..], std::slice::from_ref(&key)).unwrap();
    assert!(report.ok(), "{report:?}");
    assert!(report.audit_events >= 2, "version.create and version.lineage.add at least: {report:?}");

    // Another key: nothing is trusted.
    fails(&bytes, &cairn_audit::SigningKey::generate().public(), "another key");
    // Any byte changed in the file (spread over its whole length) fails, unless, past the
    // gzip header (which must be exactly ours), the archive it decompresses to is byte for byte
    // the same: deflate can encode the same content in
    // more than one way (padding bits at the end; a back-reference into a run of the tar
    // format's zero padding may point a few bytes further back and copy the same zeros).
    let content = inflate(&bytes).unwrap();
    let spread = (0..bytes.len()).step_by((bytes.len() / 97).max(1));
    for i in (0..10).chain(spread).chain(bytes.len() - 8..bytes.len()) {
        let mut t = bytes.clone();
        t[i] ^= 0xff;
        if i >= 10 && inflate(&t).is_some_and(|c| c == content) {
            continue;
        }
        fails(&t, &key, &format!("byte {i} flipped"));
    }
    // Rebuilt archives: a member changed, missing or added; the index rewritten.
    let by_name: BTreeMap<&str, usize> = got.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect();
    let mut changed = got.clone();
    changed[by_name["lineage.json"]].1 = b"{\"model\":\"team/m\",\"version\":1,\"inputs\":[]}".to_vec();
    fails(&pack(&changed, None), &key, "a member changed");
    let mut missing = got.clone();
    missing.remove(by_name["scan.json"]);
    fails(&pack(&missing, None), &key, "a member missing");
    let mut extra = got.clone();
    extra.push(("notes.txt".into(), b"trust me".to_vec()));
    fails(&pack(&extra, None), &key, "an extra member");
    let mut reindexed = got.clone();
    let mut idx: Value = serde_json::from_slice(&got[0].1).unwrap();
    idx["version"] = json!(2);
    reindexed[0].1 = serde_json::to_vec_pretty(&idx).unwrap();
    fails(&pack(&reindexed, None), &key, "the index rewritten");
    let mut audit_cut = got.clone();
    let i = by_name["audit.jsonl"];
    let lines: Vec<&str> = audit.lines().collect();
    audit_cut[i].1 = lines[..lines.len() - 1].join("\n").into_bytes();
    fails(&pack(&audit_cut, None), &key, "the audit trail cut short");
    // Unsafe archives are refused outright.
    let mut traversal = got.clone();
    traversal.push(("../escape.txt".into(), b"x".to_vec()));
    assert!(matches!(verify(&pack(&traversal, None)[..], std::slice::from_ref(&key)), Err(BundleError::Unsafe(_))));
    assert!(matches!(
        verify(&pack(&got, Some("/etc/passwd"))[..], std::slice::from_ref(&key)),
        Err(BundleError::Unsafe(_))
    ));
    let mut swapped = got.clone();
    swapped.swap(0, 2);
    assert!(matches!(verify(&pack(&swapped, None)[..], std::slice::from_ref(&key)), Err(BundleError::Unsafe(_))));
    assert!(verify(&b"not a bundle"[..], std::slice::from_ref(&key)).is_err());
    let mut appended = bytes.clone();
    appended.extend_from_slice(b"more");
    fails(&appended, &key, "bytes appended");

    // A version without a card still has a bundle, without card renderings.
    s.push("team/m", &[("weights.bin", b"weights 2")]).await;
    let (st, bytes2) = bundle(s, &s.token, "/api/v1/models/team/m/versions/2/evidence").await;
    assert_eq!(st, StatusCode::OK);
    assert!(!members(&bytes2).iter().any(|(n, _)| n.starts_with("card/")));
    assert!(verify(&bytes2[..], std::slice::from_ref(&key)).unwrap().ok());

    // Auditors may export; a model owner may not (audit.read), nor may anyone see another
    // namespace's versions.
    let auditor = s.service_account("aud", &[("auditor", None)]).await;
    let owner = s.service_account("own", &[("model_owner", Some("team"))]).await;
    let (st, _) = bundle(s, &auditor, "/api/v1/models/team/m/versions/1/evidence").await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = bundle(s, &owner, "/api/v1/models/team/m/versions/1/evidence").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = bundle(s, &s.token, "/api/v1/models/team/m/versions/9/evidence").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

mod evidence {
    use super::*;
    cairn_test_utils::both_backends!(bundles_verify_and_tampering_fails);
}
