//! One suite, run against a local directory and against S3 (embedded s3s-fs on loopback), each
//! with and without encryption at rest.

mod common;

use std::time::Duration;

use bytes::Bytes;
use cairn_blob::test_support::{S3_ACCESS_KEY, S3_BUCKET, S3_REGION, S3_SECRET_KEY};
use cairn_blob::{BlobError, Digest, VerifyOutcome};
use common::*;
use futures::StreamExt;

/// Generates, for each case, one test per environment: `<case>::local`, `::local_encrypted`,
/// `::s3`, `::s3_encrypted`.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() { super::$case(Env::new(Kind::Local, None).await).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local_encrypted() { super::$case(Env::new(Kind::Local, Some(K1)).await).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() { super::$case(Env::new(Kind::S3, None).await).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3_encrypted() { super::$case(Env::new(Kind::S3, Some(K1)).await).await }
        }
    )*};
}

suite!(
    roundtrip,
    dedup,
    size_mismatch_stores_nothing,
    digest_mismatch_stores_nothing,
    wrong_part_bodies_are_rejected,
    parts_out_of_order_parallel_and_retried,
    reuploaded_part_with_other_bytes_is_caught,
    abort_is_idempotent,
    range_reads,
    flipped_byte_is_never_served_complete,
    truncated_object_is_corrupt,
    presign_only_for_plain_s3,
    list_shows_committed_blobs_only,
    sweep_removes_leftover_staging,
    killed_mid_write_leaves_nothing_visible,
    delete_and_verify,
    describe_and_ping,
);

async fn roundtrip(env: Env) {
    let store = &env.store;
    let ps = env.part_size() as usize;
    let sizes = [0, 1, 1_000, SEGMENT as usize, SEGMENT as usize + 1, ps - 1, ps, ps + 1, env.multi_part_size()];
    for (seed, size) in sizes.into_iter().enumerate() {
        let bytes = data(size, seed as u64);
        let d = put(store, &bytes).await;
        let info = store.stat(&d).await.unwrap().unwrap();
        assert_eq!(info.size, size as u64);
        assert_eq!(info.key_id, env.key.map(key_id), "size {size}");
        let back = read(store, &d, None).await.unwrap();
        assert!(back == bytes, "size {size}: content differs");
        assert_eq!(store.get(&d, None).await.unwrap().size, size as u64);
        assert_eq!(store.verify(&d).await.unwrap(), VerifyOutcome::Ok);
        if let Some(key) = env.key {
            // Unencrypted objects are exactly the plaintext; encrypted ones never contain it.
            let stored = std::fs::read(env.stored_path(&d)).unwrap();
            assert!(stored.starts_with(b"CAIRNENC"));
            assert!(stored.len() > size, "{key}");
            // Ciphertext agrees with the plaintext at the same offset about once in 256 bytes.
            let same = stored[40..].iter().zip(&bytes).take(8192).filter(|(a, b)| a == b).count();
            assert!(same <= 8192.min(size) / 64, "plaintext visible at rest ({same} equal bytes)");
        } else {
            assert!(std::fs::read(env.stored_path(&d)).unwrap() == bytes);
        }
    }
    assert_eq!(listed(store).await.len(), sizes.len());
    // Part arithmetic.
    assert_eq!(store.part_count(0), 1);
    assert_eq!(store.part_count(env.part_size()), 1);
    assert_eq!(store.part_count(env.part_size() + 1), 2);
    // Reading what is not there.
    let absent = Digest::of(b"absent");
    assert!(store.stat(&absent).await.unwrap().is_none());
    assert!(matches!(store.get(&absent, None).await, Err(BlobError::NotFound(d)) if d == absent));
}

async fn dedup(env: Env) {
    let store = &env.store;
    let bytes = data(env.multi_part_size(), 1);
    let d = put(store, &bytes).await;
    // The same bytes again, one-shot and as a full multi-part upload: both succeed, one object.
    put(store, &bytes).await;
    let size = bytes.len() as u64;
    let h = store.start_upload(&d, size).await.unwrap();
    let mut receipts = Vec::new();
    for part in 1..=store.part_count(size) {
        let (start, end) = part_bounds(&env, size, part);
        receipts.push(store.put_part(&h, &d, size, part, body(&bytes[start..end])).await.unwrap());
    }
    store.complete_upload(&h, &d, size, &receipts).await.unwrap();
    // Completing again (a client retry) still succeeds.
    store.complete_upload(&h, &d, size, &receipts).await.unwrap();
    let all = listed(store).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].digest, d);
    assert!(read(store, &d, None).await.unwrap() == bytes);
    // No staging was left behind.
    assert_eq!(store.sweep_staging(Duration::ZERO).await.unwrap(), 0);
    // A one-shot put of a known digest with another size is refused.
    assert!(matches!(store.put(&d, size + 1, body(&bytes)).await, Err(BlobError::SizeMismatch { .. })));
}

fn part_bounds(env: &Env, size: u64, part: u32) -> (usize, usize) {
    let ps = env.part_size();
    let start = u64::from(part - 1) * ps;
    (start as usize, (start + ps).min(size) as usize)
}

async fn assert_nothing_visible(env: &Env, d: &Digest) {
    assert!(env.store.stat(d).await.unwrap().is_none());
    assert!(listed(&env.store).await.is_empty());
    assert!(matches!(env.store.get(d, None).await, Err(BlobError::NotFound(_))));
}

async fn size_mismatch_stores_nothing(env: Env) {
    let store = &env.store;
    for size in [0usize, 1_000, env.multi_part_size()] {
        let bytes = data(size, 2);
        let d = Digest::of(&bytes);
        let err = store.put(&d, size as u64 + 1, body(&bytes)).await.unwrap_err();
        assert!(
            matches!(err, BlobError::SizeMismatch { expected, actual } if expected == size as u64 + 1 && actual == size as u64),
            "{err}"
        );
        if size > 0 {
            let err = store.put(&d, size as u64 - 1, body(&bytes)).await.unwrap_err();
            assert!(matches!(err, BlobError::SizeMismatch { .. }), "{err}");
        }
        assert_nothing_visible(&env, &d).await;
    }
    assert_eq!(store.sweep_staging(Duration::ZERO).await.unwrap(), 0, "failed uploads clean up after themselves");
}

async fn digest_mismatch_stores_nothing(env: Env) {
    let store = &env.store;
    let bytes = data(env.multi_part_size(), 3);
    let claimed = Digest::of(b"something else");
    let size = bytes.len() as u64;
    // One-shot (parts hashed in order as they stream).
    let err = store.put(&claimed, size, body(&bytes)).await.unwrap_err();
    assert!(
        matches!(err, BlobError::DigestMismatch { expected, actual } if expected == claimed && actual == Digest::of(&bytes)),
        "{err}"
    );
    assert_nothing_visible(&env, &claimed).await;
    // Multi-part out of order (verified by reading the staged object back).
    let h = store.start_upload(&claimed, size).await.unwrap();
    let mut receipts = Vec::new();
    for part in (1..=store.part_count(size)).rev() {
        let (start, end) = part_bounds(&env, size, part);
        receipts.push(store.put_part(&h, &claimed, size, part, body(&bytes[start..end])).await.unwrap());
    }
    let err = store.complete_upload(&h, &claimed, size, &receipts).await.unwrap_err();
    assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
    assert_nothing_visible(&env, &claimed).await;
    assert_eq!(store.sweep_staging(Duration::ZERO).await.unwrap(), 0, "a failed completion removes the staging");
}

async fn wrong_part_bodies_are_rejected(env: Env) {
    let store = &env.store;
    let bytes = data(env.multi_part_size(), 4);
    let d = Digest::of(&bytes);
    let size = bytes.len() as u64;
    let h = store.start_upload(&d, size).await.unwrap();
    let (start, end) = part_bounds(&env, size, 1);
    // Truncated and overlong bodies.
    let err = store.put_part(&h, &d, size, 1, body(&bytes[start..end - 1])).await.unwrap_err();
    assert!(matches!(err, BlobError::SizeMismatch { .. }), "{err}");
    let err = store.put_part(&h, &d, size, 1, body(&bytes[start..end + 1])).await.unwrap_err();
    assert!(matches!(err, BlobError::SizeMismatch { .. }), "{err}");
    // A body that fails mid-way.
    let failing = futures::stream::iter(vec![
        Ok(Bytes::copy_from_slice(&bytes[..1000])),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client went away")),
    ]);
    assert!(matches!(store.put_part(&h, &d, size, 1, failing).await, Err(BlobError::Io(_))));
    // Part numbers outside the upload and a handle for another blob.
    let count = store.part_count(size);
    assert!(matches!(store.put_part(&h, &d, size, 0, body(b"")).await, Err(BlobError::InvalidPart(_))));
    assert!(matches!(store.put_part(&h, &d, size, count + 1, body(b"")).await, Err(BlobError::InvalidPart(_))));
    let other = Digest::of(b"other");
    assert!(matches!(
        store.put_part(&h, &other, size, 1, body(&bytes[start..end])).await,
        Err(BlobError::InvalidPart(_))
    ));
    assert!(matches!(
        store.complete_upload(&UploadHandleExt::garbage(), &d, size, &[]).await,
        Err(BlobError::InvalidPart(_))
    ));
    // Completing without the failed part is refused and keeps the upload, which can then be finished.
    let mut receipts = Vec::new();
    for part in 2..=count {
        let (start, end) = part_bounds(&env, size, part);
        receipts.push(store.put_part(&h, &d, size, part, body(&bytes[start..end])).await.unwrap());
    }
    let err = store.complete_upload(&h, &d, size, &receipts).await.unwrap_err();
    assert!(matches!(err, BlobError::InvalidPart(_)), "{err}");
    assert_nothing_visible(&env, &d).await;
    receipts.push(store.put_part(&h, &d, size, 1, body(&bytes[start..end])).await.unwrap());
    store.complete_upload(&h, &d, size, &receipts).await.unwrap();
    assert!(read(store, &d, None).await.unwrap() == bytes);
}

struct UploadHandleExt;
impl UploadHandleExt {
    fn garbage() -> cairn_blob::UploadHandle {
        cairn_blob::UploadHandle("cb1.not-hex".into())
    }
}

async fn parts_out_of_order_parallel_and_retried(env: Env) {
    let store = &env.store;
    let bytes = data(env.multi_part_size(), 5);
    let d = Digest::of(&bytes);
    let size = bytes.len() as u64;
    assert_eq!(store.part_count(size), 3);
    let h = store.start_upload(&d, size).await.unwrap();
    let slice = |part| {
        let (s, e) = part_bounds(&env, size, part);
        &bytes[s..e]
    };
    // Part 3 first, then 1 and 2 in parallel, then 2 again (a retry); the last receipt counts.
    let r3 = store.put_part(&h, &d, size, 3, body(slice(3))).await.unwrap();
    let (r1, r2) = futures::join!(
        store.put_part(&h, &d, size, 1, body(slice(1))),
        store.put_part(&h, &d, size, 2, body(slice(2)))
    );
    let (r1, _r2) = (r1.unwrap(), r2.unwrap());
    let r2 = store.put_part(&h, &d, size, 2, body(slice(2))).await.unwrap();
    assert_eq!((r1.part, r2.part, r3.part), (1, 2, 3));
    assert_eq!(r1.size + r2.size + r3.size, size);
    // Receipts in any order.
    store.complete_upload(&h, &d, size, &[r3, r1, r2]).await.unwrap();
    assert!(read(store, &d, None).await.unwrap() == bytes);
    assert_eq!(store.verify(&d).await.unwrap(), VerifyOutcome::Ok);
}

/// Parts that arrived in order are hashed in memory; a part uploaded again afterwards must
/// make completion read the staged object back rather than trust that hash.
async fn reuploaded_part_with_other_bytes_is_caught(env: Env) {
    let store = &env.store;
    let bytes = data(env.multi_part_size(), 17);
    let d = Digest::of(&bytes);
    let size = bytes.len() as u64;
    let (s2, e2) = part_bounds(&env, size, 2);
    let upload_in_order = || async {
        let h = store.start_upload(&d, size).await.unwrap();
        let mut receipts = Vec::new();
        for part in 1..=store.part_count(size) {
            let (s, e) = part_bounds(&env, size, part);
            receipts.push(store.put_part(&h, &d, size, part, body(&bytes[s..e])).await.unwrap());
        }
        (h, receipts)
    };
    let (h, mut receipts) = upload_in_order().await;
    receipts[1] = store.put_part(&h, &d, size, 2, body(&data(e2 - s2, 99))).await.unwrap();
    let err = store.complete_upload(&h, &d, size, &receipts).await.unwrap_err();
    assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
    assert_nothing_visible(&env, &d).await;
    // The same sequence with the right bytes the second time completes (by reading back).
    let (h, mut receipts) = upload_in_order().await;
    receipts[1] = store.put_part(&h, &d, size, 2, body(&bytes[s2..e2])).await.unwrap();
    store.complete_upload(&h, &d, size, &receipts).await.unwrap();
    assert!(read(store, &d, None).await.unwrap() == bytes);
}

async fn abort_is_idempotent(env: Env) {
    let store = &env.store;
    let bytes = data(env.multi_part_size(), 6);
    let d = Digest::of(&bytes);
    let size = bytes.len() as u64;
    let h = store.start_upload(&d, size).await.unwrap();
    let (s, e) = part_bounds(&env, size, 1);
    let r1 = store.put_part(&h, &d, size, 1, body(&bytes[s..e])).await.unwrap();
    store.abort_upload(&h).await.unwrap();
    store.abort_upload(&h).await.unwrap();
    assert!(store.put_part(&h, &d, size, 2, body(&bytes[e..2 * e])).await.is_err());
    assert!(store.complete_upload(&h, &d, size, &[r1]).await.is_err());
    assert_nothing_visible(&env, &d).await;
    assert_eq!(store.sweep_staging(Duration::ZERO).await.unwrap(), 0);
}

async fn range_reads(env: Env) {
    let store = &env.store;
    let bytes = data(env.multi_part_size(), 7);
    let d = put(store, &bytes).await;
    let n = bytes.len() as u64;
    let s = SEGMENT;
    let ps = env.part_size();
    let ranges = [
        0..1,
        0..s,
        s - 10..s + 10,
        2 * s - 1..2 * s + 1,
        3..3 * s + 7,
        ps - 5..ps + 5,
        n - 1..n,
        n - 100_000..n,
        0..n,
        5..5,
        n..n,
    ];
    for r in ranges {
        let got = read(store, &d, Some(r.clone())).await.unwrap();
        assert!(got == bytes[r.start as usize..r.end as usize], "range {r:?} differs");
        assert_eq!(store.get(&d, Some(r.clone())).await.unwrap().size, n);
    }
    let (past_start, backwards_end) = (n + 1, 5);
    for bad in [n..n + 1, 0..n + 1, past_start..past_start + 1, 10..backwards_end] {
        assert!(matches!(store.get(&d, Some(bad.clone())).await, Err(BlobError::InvalidRange)), "{bad:?}");
    }
    // Ranges of an empty blob.
    let empty = put(store, b"").await;
    assert!(read(store, &empty, Some(0..0)).await.unwrap().is_empty());
    assert!(matches!(store.get(&empty, Some(0..1)).await, Err(BlobError::InvalidRange)));
}

fn flip_byte(env: &Env, d: &Digest, offset_from_end: u64) {
    let path = env.stored_path(d);
    let mut stored = std::fs::read(&path).unwrap();
    let at = stored.len() - offset_from_end as usize;
    stored[at] ^= 0x01;
    std::fs::write(&path, stored).unwrap();
}

async fn flipped_byte_is_never_served_complete(env: Env) {
    let store = &env.store;
    // One flip in the middle, one in the very last byte (the tag or the final plaintext byte).
    for (seed, from_end) in [(8u64, 150_000u64), (9, 1)] {
        let bytes = data(4 * SEGMENT as usize + 999, seed);
        let d = put(store, &bytes).await;
        flip_byte(&env, &d, from_end);
        let (got, err) = read_until_error(store, &d).await;
        let err = err.expect("a corrupt blob must not read cleanly");
        assert!(matches!(err, BlobError::Corrupt { digest, .. } if digest == d), "{err}");
        assert!(got.len() < bytes.len(), "the complete content was served");
        if env.encrypted() {
            // Segments are authenticated before they are served: nothing wrong gets out at all.
            assert!(bytes.starts_with(&got), "served bytes that are not the blob's");
        }
        match store.verify(&d).await.unwrap() {
            VerifyOutcome::Corrupt(reason) => assert!(!reason.is_empty()),
            other => panic!("verify said {other:?}"),
        }
        if env.encrypted() {
            // Range reads of encrypted blobs are authenticated too.
            let last = bytes.len() as u64;
            let r = if from_end == 1 { last - 1..last } else { last - from_end - 10..last - from_end + 10 };
            assert!(matches!(read(store, &d, Some(r)).await, Err(BlobError::Corrupt { .. })));
            // Untouched segments still read.
            assert!(read(store, &d, Some(0..100)).await.unwrap() == bytes[..100]);
        }
    }
}

async fn truncated_object_is_corrupt(env: Env) {
    let store = &env.store;
    let bytes = data(3 * SEGMENT as usize, 10);
    let d = put(store, &bytes).await;
    let path = env.stored_path(&d);
    let stored = std::fs::read(&path).unwrap();
    std::fs::write(&path, &stored[..stored.len() - 20]).unwrap();
    let (got, err) = read_until_error(store, &d).await;
    assert!(got.len() < bytes.len());
    assert!(matches!(err, Some(BlobError::Corrupt { .. })), "{err:?}");
    assert!(matches!(store.verify(&d).await.unwrap(), VerifyOutcome::Corrupt(_)));
    // Uploading the blob again repairs it, one-shot or in parts.
    put(store, &bytes).await;
    assert_eq!(store.verify(&d).await.unwrap(), VerifyOutcome::Ok);
    std::fs::write(&path, &stored[..stored.len() - 20]).unwrap();
    let size = bytes.len() as u64;
    let h = store.start_upload(&d, size).await.unwrap();
    let mut receipts = Vec::new();
    for part in 1..=store.part_count(size) {
        let (s, e) = part_bounds(&env, size, part);
        receipts.push(store.put_part(&h, &d, size, part, body(&bytes[s..e])).await.unwrap());
    }
    store.complete_upload(&h, &d, size, &receipts).await.unwrap();
    assert!(read(store, &d, None).await.unwrap() == bytes);
}

async fn presign_only_for_plain_s3(env: Env) {
    let store = &env.store;
    let bytes = data(100_000, 11);
    let d = put(store, &bytes).await;
    let url = store.presign_get(&d, Duration::from_secs(300)).await.unwrap();
    match (env.kind, env.encrypted()) {
        (Kind::S3, false) => {
            let url = url.expect("plain S3 presigns");
            assert!(!url.contains("cairn-test-secret-key"));
            let response = reqwest::get(&url).await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            assert!(response.bytes().await.unwrap() == bytes);
        }
        _ => assert!(url.is_none()),
    }
}

async fn list_shows_committed_blobs_only(env: Env) {
    let store = &env.store;
    assert!(listed(store).await.is_empty());
    // An upload in progress, with a part stored.
    let pending = data(env.multi_part_size(), 12);
    let pd = Digest::of(&pending);
    let h = store.start_upload(&pd, pending.len() as u64).await.unwrap();
    let (s, e) = part_bounds(&env, pending.len() as u64, 1);
    store.put_part(&h, &pd, pending.len() as u64, 1, body(&pending[s..e])).await.unwrap();
    let a = data(10, 13);
    let b = data(200_000, 14);
    let (da, db) = (put(store, &a).await, put(store, &b).await);
    let all = listed(store).await;
    let mut expected = vec![(da, a.len() as u64), (db, b.len() as u64)];
    expected.sort();
    assert_eq!(all.iter().map(|l| l.digest).collect::<Vec<_>>(), expected.iter().map(|e| e.0).collect::<Vec<_>>());
    for (listed, (_, size)) in all.iter().zip(&expected) {
        if env.encrypted() {
            assert!(listed.stored_size > *size);
        } else {
            assert_eq!(listed.stored_size, *size);
        }
        assert!(listed.last_modified.elapsed().unwrap_or_default() < Duration::from_secs(3600));
    }
    store.abort_upload(&h).await.unwrap();
}

async fn sweep_removes_leftover_staging(env: Env) {
    let store = &env.store;
    env.plant_staging();
    assert_eq!(store.sweep_staging(Duration::from_secs(3600)).await.unwrap(), 0, "fresh staging is kept");
    assert_eq!(store.sweep_staging(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(store.sweep_staging(Duration::ZERO).await.unwrap(), 0);
    assert!(listed(store).await.is_empty());
}

async fn killed_mid_write_leaves_nothing_visible(env: Env) {
    let store = &env.store;
    let bytes = data(env.multi_part_size(), 15);
    let d = Digest::of(&bytes);
    let size = bytes.len() as u64;
    // Feed more than a part, then drop the write while it waits for the rest.
    let sent = env.part_size() as usize + 70_000;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
    let streamed = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }).boxed();
    let write = store.put(&d, size, streamed);
    let feed = async {
        for chunk in bytes[..sent].chunks(8192) {
            tx.send(Ok(Bytes::copy_from_slice(chunk))).await.unwrap();
        }
        // One more send returns only once the writer took the previous chunk.
        tx.send(Ok(Bytes::new())).await.unwrap();
    };
    tokio::select! {
        result = write => panic!("the write finished without its body: {result:?}"),
        () = feed => {}
    }
    assert_nothing_visible(&env, &d).await;
    // A part upload killed mid-way leaves nothing either, and the part can be uploaded again.
    let h = store.start_upload(&d, size).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
    let streamed = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }).boxed();
    let part = store.put_part(&h, &d, size, 1, streamed);
    let feed = async {
        tx.send(Ok(Bytes::copy_from_slice(&bytes[..100_000]))).await.unwrap();
        tx.send(Ok(Bytes::new())).await.unwrap();
    };
    tokio::select! {
        result = part => panic!("the part finished without its body: {result:?}"),
        () = feed => {}
    }
    let mut receipts = Vec::new();
    for part in 1..=store.part_count(size) {
        let (s, e) = part_bounds(&env, size, part);
        receipts.push(store.put_part(&h, &d, size, part, body(&bytes[s..e])).await.unwrap());
    }
    store.complete_upload(&h, &d, size, &receipts).await.unwrap();
    assert!(read(store, &d, None).await.unwrap() == bytes);
    if env.kind == Kind::Local {
        // The killed one-shot write left its staging; the sweep removes it, the blob stays.
        assert_eq!(store.sweep_staging(Duration::ZERO).await.unwrap(), 1);
    }
    assert_eq!(listed(store).await.len(), 1);
}

async fn delete_and_verify(env: Env) {
    let store = &env.store;
    let d = put(store, &data(70_000, 16)).await;
    assert_eq!(store.verify(&d).await.unwrap(), VerifyOutcome::Ok);
    store.delete(&d).await.unwrap();
    assert!(store.stat(&d).await.unwrap().is_none());
    assert_eq!(store.verify(&d).await.unwrap(), VerifyOutcome::Missing);
    store.delete(&d).await.unwrap();
    assert!(listed(store).await.is_empty());
}

async fn describe_and_ping(env: Env) {
    let store = &env.store;
    store.ping().await.unwrap();
    let text = store.describe();
    match env.kind {
        Kind::Local => assert!(text.starts_with("local "), "{text}"),
        Kind::S3 => assert!(text.starts_with("s3 cairn/models"), "{text}"),
    }
    assert!(!text.contains("secret"), "{text}");
    match env.key {
        Some(key) => {
            assert!(text.contains(&format!("encrypted (key id {}", key_id(key))), "{text}");
            assert!(!text.contains(key));
            assert!(!format!("{store:?}").contains(key));
        }
        None => assert!(!text.contains("encrypted"), "{text}"),
    }
    // Ping leaves nothing behind.
    assert!(listed(store).await.is_empty());
}

// ---- Keys: per backend, since they are about moving between key files. ----

macro_rules! per_backend {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() { super::$case(Kind::Local).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() { super::$case(Kind::S3).await }
        }
    )*};
}

per_backend!(wrong_or_missing_key_is_a_clear_error, rotate_key_reencrypts, bad_settings_are_refused);

async fn wrong_or_missing_key_is_a_clear_error(kind: Kind) {
    let env = Env::new(kind, Some(K1)).await;
    let bytes = data(150_000, 20);
    let d = put(&env.store, &bytes).await;
    for other in [Some(K2), None] {
        let store = env.open(other).await.unwrap();
        let err = store.get(&d, None).await.unwrap_err();
        assert!(matches!(&err, BlobError::UnknownKey(id) if *id == key_id(K1)), "{err}");
        let message = err.to_string();
        assert!(message.contains(&key_id(K1)) && !message.contains(K1) && !message.contains(K2), "{message}");
        assert!(matches!(store.get(&d, Some(0..10)).await, Err(BlobError::UnknownKey(_))));
        assert!(matches!(store.verify(&d).await, Err(BlobError::UnknownKey(_))));
        // The blob is still known to exist, and under which key.
        assert_eq!(store.stat(&d).await.unwrap().unwrap().key_id, Some(key_id(K1)));
    }
    // An older key on a later line still reads.
    let rotated = env.open(Some(&format!("{K2}\n{K1}\n"))).await.unwrap();
    assert!(read(&rotated, &d, None).await.unwrap() == bytes);
    // An upload started under a key cannot be finished by a store without it.
    let h = env.store.start_upload(&d, bytes.len() as u64).await.unwrap();
    let plain = env.open(None).await.unwrap();
    let err = plain.put_part(&h, &d, bytes.len() as u64, 1, body(&bytes[..10])).await.unwrap_err();
    assert!(matches!(err, BlobError::UnknownKey(_)), "{err}");
    env.store.abort_upload(&h).await.unwrap();
}

async fn rotate_key_reencrypts(kind: Kind) {
    let env = Env::new(kind, Some(K1)).await;
    let old = data(env.multi_part_size(), 21);
    let d_old = put(&env.store, &old).await;
    let unencrypted = data(99_999, 22);
    let plain_store = env.open(None).await.unwrap();
    let d_plain = put(&plain_store, &unencrypted).await;
    assert!(matches!(plain_store.rotate_key(&d_plain).await, Err(BlobError::Config(_))));

    let store = env.open(Some(&format!("{K2}\n{K1}"))).await.unwrap();
    assert_eq!(store.stat(&d_old).await.unwrap().unwrap().key_id, Some(key_id(K1)));
    assert!(store.rotate_key(&d_old).await.unwrap());
    assert_eq!(store.stat(&d_old).await.unwrap().unwrap().key_id, Some(key_id(K2)));
    assert!(!store.rotate_key(&d_old).await.unwrap(), "already under the active key");
    assert!(store.rotate_key(&d_plain).await.unwrap(), "unencrypted blobs get encrypted");
    assert_eq!(
        store.stat(&d_plain).await.unwrap().unwrap(),
        cairn_blob::BlobInfo { size: 99_999, key_id: Some(key_id(K2)) }
    );
    assert!(matches!(store.rotate_key(&Digest::of(b"nope")).await, Err(BlobError::NotFound(_))));

    // Only the new key is needed now.
    let only_new = env.open(Some(K2)).await.unwrap();
    assert!(read(&only_new, &d_old, None).await.unwrap() == old);
    assert!(read(&only_new, &d_plain, None).await.unwrap() == unencrypted);
    assert_eq!(only_new.verify(&d_old).await.unwrap(), VerifyOutcome::Ok);
    assert_eq!(listed(&only_new).await.len(), 2);
    assert_eq!(only_new.sweep_staging(Duration::ZERO).await.unwrap(), 0);
}

async fn bad_settings_are_refused(kind: Kind) {
    let env = Env::new(kind, None).await;
    let mut options = env.options();
    options.part_size = Some(env.part_size() + 1);
    let err = cairn_blob::BlobStore::open_with(&env.config(None), &options).await.unwrap_err();
    assert!(matches!(err, BlobError::Config(_)), "{err}");
    if kind == Kind::S3 {
        options.part_size = Some(1024 * 1024);
        let err = cairn_blob::BlobStore::open_with(&env.config(None), &options).await.unwrap_err();
        assert!(matches!(err, BlobError::Config(ref m) if m.contains("5 MiB")), "{err}");
    }
    let secretish = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeZZ";
    let err = env.open(Some(secretish)).await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, BlobError::Config(_)) && message.contains("line 1") && !message.contains("0011"),
        "{message}"
    );
    let mut cfg = env.config(None);
    cfg.encryption_key_file = Some(env.data_dir.path().join("missing-key-file"));
    assert!(matches!(cairn_blob::BlobStore::open_with(&cfg, &env.options()).await, Err(BlobError::Config(_))));
    for url in ["ftp://x/y", "file://relative/dir", "s3:///no-bucket"] {
        let mut cfg = env.config(None);
        cfg.url = Some(url.into());
        assert!(
            matches!(cairn_blob::BlobStore::open_with(&cfg, &env.options()).await, Err(BlobError::Config(_))),
            "{url}"
        );
    }
}

#[tokio::test]
async fn file_url_is_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("elsewhere");
    let cfg = cairn_blob::BlobConfig {
        url: Some(format!("file://{}", root.display())),
        data_dir: dir.path().join("data"),
        encryption_key_file: None,
    };
    let store = cairn_blob::BlobStore::open(&cfg).await.unwrap();
    assert_eq!(store.part_size(), 16 * 1024 * 1024);
    let d = put(&store, b"hello").await;
    assert!(root.join("sha256").join(&d.to_string()[..2]).join(d.to_string()).is_file());
    assert_eq!(store.describe(), format!("local {}", root.display()));
}

/// `BlobStore::open` takes S3 settings from the `AWS_*` environment (as `cairn serve` does) and
/// allows plain HTTP to a loopback endpoint. The environment is per process, so the check runs
/// in a child process of this test binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_reads_the_aws_environment() {
    let s3 = start_s3().await;
    let endpoint = s3.endpoint().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "environment_child", "--ignored", "--test-threads=1"])
            .env("CAIRN_BLOB_TEST_CHILD", "1")
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .env("AWS_REGION", S3_REGION)
            .env("AWS_ENDPOINT_URL", endpoint)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "child failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(s3.object_path("from-env/sha256").is_dir());
}

#[tokio::test]
#[ignore = "run by open_reads_the_aws_environment in a child process"]
async fn environment_child() {
    if std::env::var_os("CAIRN_BLOB_TEST_CHILD").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = cairn_blob::BlobConfig {
        url: Some(format!("s3://{S3_BUCKET}/from-env")),
        data_dir: dir.path().to_path_buf(),
        encryption_key_file: None,
    };
    let store = cairn_blob::BlobStore::open(&cfg).await.unwrap();
    assert_eq!(store.describe(), format!("s3 {S3_BUCKET}/from-env"));
    store.ping().await.unwrap();
    let d = put(&store, b"settings from the environment").await;
    assert_eq!(read(&store, &d, None).await.unwrap(), b"settings from the environment");
}

/// On S3 a part is held in memory until it goes out in one request, so at most two parts
/// (across all uploads) are read at once: the third waits, its body unread, until one is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_holds_at_most_two_parts_in_memory() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let env = Env::new(Kind::S3, None).await;
    let part = env.part_size() as usize;
    let started = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for seed in 0..3u8 {
        let bytes: Bytes = vec![seed; part].into();
        let d = Digest::of(&bytes);
        let store = env.store.clone();
        let (started, release) = (started.clone(), release.clone());
        tasks.push(tokio::spawn(async move {
            let h = store.start_upload(&d, part as u64).await.unwrap();
            // The body says it has begun when first read, then waits to be let go.
            let body = futures::stream::once(async move {
                started.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                Ok::<Bytes, std::io::Error>(bytes)
            });
            store.put_part(&h, &d, part as u64, 1, Box::pin(body)).await.unwrap();
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(started.load(Ordering::SeqCst), 2, "two parts are read at once, the third waits");
    // One part finishes: the third gets its turn, and every part arrives.
    release.notify_one();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(started.load(Ordering::SeqCst), 3);
    for _ in 0..3 {
        release.notify_one();
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t).await.expect("every part arrives").unwrap();
    }
}
