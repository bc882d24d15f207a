//! A whole version as one tar stream, read back by GNU tar (a real, independent reader).

use cairn_test_utils::{Backend, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

async fn post(s: &TestServer, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new().post(format!("{}{path}", s.url)).bearer_auth(&s.token).json(&body).send().await;
    let resp = resp.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_unpacks_with_gnu_tar() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, "archive_unpacks_with_gnu_tar", |st| {
        st.upload_part_size = 64 * 1024;
    })
    .await
    else {
        return;
    };
    let long_path = format!("{}/weights.bin", "very-long-directory-name".repeat(6));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let files: Vec<(String, Vec<u8>)> = vec![
        ("config.json".into(), b"{\"hidden\": 8}".to_vec()),
        ("empty".into(), Vec::new()),
        ("exactly-512".into(), vec![7u8; 512]),
        (long_path.clone(), big.clone()),
    ];
    post(&s, "/api/v1/models", json!({"name": "team/tarred"})).await;
    let declared = json!({"files": files.iter().map(|(p, d)| json!({"path": p, "size": d.len(), "sha256": sha(d)})).collect::<Vec<_>>()});
    let status = post(&s, "/api/v1/models/team/tarred/uploads", declared).await;
    let id = status["upload_id"].as_str().unwrap();
    let part = status["part_size"].as_u64().unwrap() as usize;
    for (_, data) in &files {
        for n in 0..data.len().div_ceil(part).max(1) {
            let chunk = data[n * part..((n + 1) * part).min(data.len())].to_vec();
            let resp = reqwest::Client::new()
                .put(format!("{}/api/v1/uploads/{id}/blobs/{}/parts/{n}", s.url, sha(data)))
                .bearer_auth(&s.token)
                .body(chunk)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
        }
    }
    post(&s, &format!("/api/v1/uploads/{id}/commit"), json!({})).await;

    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/models/team/tarred/versions/1/archive", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/x-tar");
    let declared_len: usize = resp.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let archive = resp.bytes().await.unwrap();
    assert_eq!(archive.len(), declared_len);

    let out = tempfile::tempdir().unwrap();
    let tar_file = out.path().join("v1.tar");
    std::fs::write(&tar_file, &archive).unwrap();
    let dest = out.path().join("x");
    std::fs::create_dir(&dest).unwrap();
    let st = std::process::Command::new("tar").arg("-xf").arg(&tar_file).arg("-C").arg(&dest).status().unwrap();
    assert!(st.success(), "GNU tar refused the archive");
    for (path, data) in &files {
        assert_eq!(&std::fs::read(dest.join(path)).unwrap(), data, "{path}");
    }
    let listed = std::process::Command::new("tar").arg("-tf").arg(&tar_file).output().unwrap();
    let mut names: Vec<String> = String::from_utf8(listed.stdout).unwrap().lines().map(str::to_owned).collect();
    names.sort();
    let mut expected: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    expected.sort();
    assert_eq!(names, expected, "exactly the version's files, nothing else");
    s.stop().await;
}
