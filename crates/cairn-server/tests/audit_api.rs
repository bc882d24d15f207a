//! The audit chain over HTTP, on SQLite and PostgreSQL: events carry their chain hashes,
//! checkpoints are signed with the key published at `/.well-known/cairn/signing-keys`,
//! exports (whole, filtered, partial) verify offline and fail when altered, and committed
//! versions carry the server's signature and the pusher's own.

use cairn_audit::export::{Line, verify_export};
use cairn_audit::statement::{PushStatement, SignatureEnvelope, VersionStatement};
use cairn_audit::{BreakKind, PublicKey, SigningKey};
use cairn_test_utils::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

cairn_test_utils::both_backends!(
    events_carry_the_chain_and_checkpoints_are_signed_with_the_published_key,
    exports_verify_offline_and_alterations_do_not,
    filtered_and_partial_exports_still_verify,
    versions_are_signed_by_the_server_and_may_carry_the_pushers_signature,
    bad_pusher_signatures_are_refused_and_change_nothing,
);

async fn call(
    s: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Vec<u8>) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", s.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.bytes().await.unwrap().to_vec())
}

async fn admin(s: &TestServer, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
    let body = if body.is_null() { None } else { Some(body) };
    let (st, bytes) = call(s, method, path, Some(&s.token), body).await;
    (st, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A few changes, so that the chain has something in it.
async fn populate(s: &TestServer, ns: &str, models: usize) {
    for i in 0..models {
        let (st, v) = admin(s, Method::POST, "/api/v1/models", json!({ "name": format!("{ns}/m{i}") })).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let (st, v) = admin(s, Method::POST, &format!("/api/v1/models/{ns}/m{i}/versions"), json!({})).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
}

async fn published_key(s: &TestServer) -> PublicKey {
    // No credential needed.
    let (st, body) = call(s, Method::GET, "/.well-known/cairn/signing-keys", None, None).await;
    assert_eq!(st, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let keys = v["keys"].as_array().unwrap();
    let current: Vec<&Value> = keys.iter().filter(|k| k["current"] == json!(true)).collect();
    assert_eq!(current.len(), 1, "{v}");
    assert_eq!(current[0]["algorithm"], "ed25519");
    let key = PublicKey::parse(current[0]["public_key"].as_str().unwrap()).unwrap();
    assert_eq!(key.key_id(), current[0]["key_id"].as_str().unwrap());
    assert_eq!(key, s.state.signing_key.public());
    key
}

async fn export(s: &TestServer, query: &str) -> String {
    let (st, body) = call(s, Method::GET, &format!("/api/v1/audit/export{query}"), Some(&s.token), None).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    String::from_utf8(body).unwrap()
}

fn lines(text: &str) -> Vec<Line> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn events_carry_the_chain_and_checkpoints_are_signed_with_the_published_key(s: &TestServer) {
    populate(s, "chain", 3).await;
    let key = published_key(s).await;
    let (st, chain) = admin(s, Method::GET, "/api/v1/audit/chain", Value::Null).await;
    assert_eq!(st, StatusCode::OK);
    let head = chain["head_seq"].as_i64().unwrap();
    assert!(head >= 6, "{chain}");
    assert_eq!(chain["signing_key_id"], key.key_id());

    // The listing shows every event with its hash, numbered 1..=head without a gap; the
    // last one's hash is the head's.
    let (_, page) = admin(s, Method::GET, "/api/v1/audit/events?limit=1000", Value::Null).await;
    let events = page["events"].as_array().unwrap();
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
    assert!(ids.len() as i64 >= head);
    let at_head = events.iter().find(|e| e["id"] == json!(head)).unwrap();
    assert_eq!(at_head["hash"], chain["head_hash"]);

    // A checkpoint on demand covers the head and verifies with the published key.
    let (st, cp) = admin(s, Method::POST, "/api/v1/audit/checkpoints", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{cp}");
    let cp: cairn_audit::Checkpoint = serde_json::from_value(cp).unwrap();
    assert!(cp.seq >= head);
    assert!(cp.verify(&key));
    assert!(!cp.verify(&SigningKey::generate().public()));
    // Asking again without new events returns the same checkpoint.
    let (_, again) = admin(s, Method::POST, "/api/v1/audit/checkpoints", json!({})).await;
    assert_eq!(serde_json::from_value::<cairn_audit::Checkpoint>(again).unwrap(), cp);
    let (_, list) = admin(s, Method::GET, "/api/v1/audit/checkpoints", Value::Null).await;
    assert_eq!(list["checkpoints"].as_array().unwrap().len(), 1, "{list}");

    // Refused attempts are in the chain too.
    let (st, v) = admin(s, Method::POST, "/api/v1/users", json!({ "username": "viewer1", "kind": "service" })).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    admin(s, Method::POST, "/api/v1/grants", json!({ "username": "viewer1", "role": "viewer" })).await;
    let (st, k) = admin(
        s,
        Method::POST,
        "/api/v1/keys",
        json!({ "name": "k", "scopes": ["read", "write"], "username": "viewer1" }),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{k}");
    let viewer = k["token"].as_str().unwrap().to_owned();
    let (st, _) = call(s, Method::DELETE, "/api/v1/models/chain/m0", Some(&viewer), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = call(s, Method::GET, "/api/v1/audit/chain", Some(&viewer), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "viewers do not read the audit chain");
    let (_, denied) = admin(s, Method::GET, "/api/v1/audit/events?outcome=denied", Value::Null).await;
    let denied = denied["events"].as_array().unwrap();
    assert!(denied.iter().any(|e| e["action"] == "model.delete" && e["actor"] == "service:viewer1"), "{denied:?}");

    let report = s.state.store.verify_audit_chain(vec![key]).await.unwrap();
    assert!(report.ok(), "{report:?}");
}

async fn exports_verify_offline_and_alterations_do_not(s: &TestServer) {
    populate(s, "exp", 4).await;
    let key = published_key(s).await;
    let text = export(s, "").await;
    let report = verify_export(text.as_bytes(), vec![key]).unwrap();
    assert!(report.ok(), "{report:?}");
    let (_, chain) = admin(s, Method::GET, "/api/v1/audit/chain", Value::Null).await;
    assert_eq!(report.last_seq, chain["head_seq"].as_i64().unwrap(), "the export reaches the head");
    assert_eq!(report.unsigned_tail, 0, "the export ends at a signed checkpoint");
    assert_eq!(report.redacted, 0);
    assert_eq!(report.events as i64, report.last_seq);

    // Another key is not trusted; the published one is.
    let r = verify_export(text.as_bytes(), vec![SigningKey::generate().public()]).unwrap();
    assert_eq!(r.first_break.unwrap().kind, BreakKind::UntrustedKey);

    // Any change to an event is found: an edited actor, a dropped line, two lines swapped,
    // the file cut short.
    let all: Vec<&str> = text.lines().collect();
    let edited = text.replacen("\"actor\":\"user:admin\"", "\"actor\":\"user:mallory\"", 1);
    assert!(edited != text, "the export names the admin");
    assert_eq!(verify_export(edited.as_bytes(), vec![key]).unwrap().first_break.unwrap().kind, BreakKind::Edited);
    let dropped = [&all[..3], &all[4..]].concat().join("\n");
    assert!(!verify_export(dropped.as_bytes(), vec![key]).unwrap().ok());
    let mut swapped = all.clone();
    swapped.swap(3, 4);
    assert!(!verify_export(swapped.join("\n").as_bytes(), vec![key]).unwrap().ok());
    let cut = all[..all.len() - 1].join("\n");
    assert_eq!(verify_export(cut.as_bytes(), vec![key]).unwrap().first_break.unwrap().kind, BreakKind::Truncated);

    // The newest events deleted from the database after a checkpoint covered them: a new
    // export carries that checkpoint and fails, instead of merely looking shorter.
    let last = report.last_seq;
    let mut tx = s.state.store.db().begin().await.unwrap();
    tx.conn().execute("DELETE FROM audit_events WHERE seq > $1", cairn_store::params![last - 2]).await.unwrap();
    tx.commit().await.unwrap();
    let after = export(s, "").await;
    let broken = verify_export(after.as_bytes(), vec![key]).unwrap().first_break.unwrap();
    assert_eq!((broken.kind, broken.seq), (BreakKind::Truncated, last - 1), "{}", broken.message);
}

async fn filtered_and_partial_exports_still_verify(s: &TestServer) {
    populate(s, "flt", 3).await;
    let key = published_key(s).await;
    // Only version creations in full; everything else is carried redacted.
    let text = export(s, "?action=version.create").await;
    let parsed = lines(&text);
    let full: Vec<_> = parsed.iter().filter_map(|l| if let Line::Event(e) = l { Some(e) } else { None }).collect();
    assert_eq!(full.len(), 3);
    assert!(full.iter().all(|e| e.action == "version.create"));
    assert!(parsed.iter().any(|l| matches!(l, Line::Redacted(_))));
    assert!(!text.contains("\"actor\":\"system\""), "redacted events disclose no details");
    let report = verify_export(text.as_bytes(), vec![key]).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events, report.redacted + 3);

    // After a checkpoint, a partial export starts there: anchored by that checkpoint.
    let (_, cp) = admin(s, Method::POST, "/api/v1/audit/checkpoints", json!({})).await;
    let cp_seq = cp["seq"].as_i64().unwrap();
    populate(s, "flt2", 2).await;
    let text = export(s, &format!("?from_seq={}", cp_seq + 1)).await;
    let Line::Header(h) = &lines(&text)[0] else { panic!("no header") };
    assert_eq!(h.anchor_seq, cp_seq);
    assert!(h.anchor_checkpoint.is_some());
    let report = verify_export(text.as_bytes(), vec![key]).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.first_seq, Some(cp_seq + 1));
    assert_eq!((report.redacted, report.unsigned_tail), (0, 0));
    // The anchor is vouched for only by its signature: a forged anchor fails.
    let forged = text.replacen(&format!("\"anchor_seq\":{cp_seq}"), &format!("\"anchor_seq\":{}", cp_seq - 1), 1);
    assert!(!verify_export(forged.as_bytes(), vec![key]).unwrap().ok());

    // Bad filters are refused with a clear message.
    let (st, body) = call(s, Method::GET, "/api/v1/audit/export?since=yesterday", Some(&s.token), None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("RFC 3339"));
    let (st, _) = call(s, Method::GET, "/api/v1/audit/export?color=red", Some(&s.token), None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "unknown parameters are refused");
}

/// Uploads `content` as `model.bin` and returns the upload id and the manifest digest.
async fn upload_one_file(s: &TestServer, model: &str, content: &[u8]) -> (String, String) {
    let sha = hex::encode(Sha256::digest(content));
    let files = json!({ "files": [{ "path": "model.bin", "size": content.len(), "sha256": sha }] });
    let (st, up) = admin(s, Method::POST, &format!("/api/v1/models/{model}/uploads"), files).await;
    assert_eq!(st, StatusCode::CREATED, "{up}");
    let id = up["upload_id"].as_str().unwrap().to_owned();
    if !up["blobs"][0]["present"].as_bool().unwrap() {
        let resp = reqwest::Client::new()
            .put(format!("{}/api/v1/uploads/{id}/blobs/{sha}/parts/0", s.url))
            .bearer_auth(&s.token)
            .header("content-type", "application/octet-stream")
            .body(content.to_vec())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
    let entry = cairn_core::manifest::FileEntry {
        path: cairn_core::manifest::FilePath::parse("model.bin").unwrap(),
        size: content.len() as u64,
        sha256: sha.clone(),
    };
    let digest = cairn_core::manifest::Manifest::new(vec![entry]).unwrap().digest();
    (id, digest)
}

async fn versions_are_signed_by_the_server_and_may_carry_the_pushers_signature(s: &TestServer) {
    admin(s, Method::POST, "/api/v1/models", json!({ "name": "sig/m" })).await;
    let key = published_key(s).await;
    let pusher = SigningKey::generate();
    let (id, digest) = upload_one_file(s, "sig/m", b"weights").await;
    let mine = SignatureEnvelope::sign("user", &PushStatement::new("sig/m", &digest), &pusher);
    let (st, v) =
        admin(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), json!({ "signatures": [mine] })).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["digest"], digest);
    let number = v["version"].as_i64().unwrap();

    let (st, sigs) =
        admin(s, Method::GET, &format!("/api/v1/models/sig/m/versions/{number}/signatures"), Value::Null).await;
    assert_eq!(st, StatusCode::OK, "{sigs}");
    let list: Vec<SignatureEnvelope> = serde_json::from_value(sigs["signatures"].clone()).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].kind, "server");
    assert_eq!(list[0].verify_self(), Some(key), "signed with the published key");
    let statement: VersionStatement = serde_json::from_str(&list[0].statement).unwrap();
    assert_eq!(
        (statement.model.as_str(), statement.version, statement.manifest_digest.as_str()),
        ("sig/m", number, digest.as_str())
    );
    assert_eq!(list[1].kind, "user");
    assert_eq!(list[1].verify_self(), Some(pusher.public()));

    // A version created without files is signed too (over the empty manifest).
    let (_, v2) = admin(s, Method::POST, "/api/v1/models/sig/m/versions", json!({})).await;
    let (_, sigs) =
        admin(s, Method::GET, &format!("/api/v1/models/sig/m/versions/{}/signatures", v2["version"]), Value::Null)
            .await;
    let list: Vec<SignatureEnvelope> = serde_json::from_value(sigs["signatures"].clone()).unwrap();
    assert_eq!(list.len(), 1);
    let statement: VersionStatement = serde_json::from_str(&list[0].statement).unwrap();
    assert_eq!(statement.manifest_digest, v2["digest"].as_str().unwrap());
}

async fn bad_pusher_signatures_are_refused_and_change_nothing(s: &TestServer) {
    admin(s, Method::POST, "/api/v1/models", json!({ "name": "bad/m" })).await;
    let pusher = SigningKey::generate();
    let (id, digest) = upload_one_file(s, "bad/m", b"other weights").await;
    let (_, before) = admin(s, Method::GET, "/api/v1/audit/chain", Value::Null).await;
    let wrong_model = SignatureEnvelope::sign("user", &PushStatement::new("bad/other", &digest), &pusher);
    let wrong_digest =
        SignatureEnvelope::sign("user", &PushStatement::new("bad/m", &format!("sha256:{}", "0".repeat(64))), &pusher);
    let mut forged = SignatureEnvelope::sign("user", &PushStatement::new("bad/m", &digest), &pusher);
    forged.public_key = SigningKey::generate().public().to_pem();
    let mut as_server = SignatureEnvelope::sign("user", &PushStatement::new("bad/m", &digest), &pusher);
    as_server.kind = "server".into();
    for (sig, says) in [
        (wrong_model, "names model"),
        (wrong_digest, "signs manifest"),
        (forged, "does not verify"),
        (as_server, "kind"),
    ] {
        let (st, v) =
            admin(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), json!({ "signatures": [sig] })).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(says), "{v}");
    }
    let (_, model) = admin(s, Method::GET, "/api/v1/models/bad/m", Value::Null).await;
    assert_eq!(model["latest_version"], 0, "no version was created");
    let (_, after) = admin(s, Method::GET, "/api/v1/audit/chain", Value::Null).await;
    assert_eq!(before["head_seq"], after["head_seq"], "nothing was recorded either");
    // The upload is still there and commits once the signature is right.
    let good = SignatureEnvelope::sign("user", &PushStatement::new("bad/m", &digest), &pusher);
    let (st, v) =
        admin(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), json!({ "signatures": [good] })).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}
