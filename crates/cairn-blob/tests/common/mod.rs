//! Test environments: a local directory in a tempdir, or S3 served by an embedded `s3s-fs`
//! on 127.0.0.1, each with or without encryption.

#![allow(dead_code)]

use std::path::PathBuf;

use bytes::Bytes;
use cairn_blob::test_support::{S3_BUCKET, S3_MIN_PART_SIZE, S3TestServer, object_key};
use cairn_blob::{BlobConfig, BlobOptions, BlobStore, Digest};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sha2::Digest as _;

pub const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
pub const K2: &str = "8f3a9c2e71d4b6058a1e3f7c9d2b4a6e8c0f1e3d5b7a9c2e4f6a8b0d1c3e5f70";
pub const SEGMENT: u64 = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Local,
    S3,
}

/// An S3-compatible server (s3s-fs over a tempdir) on a loopback port, inside this process.
pub async fn start_s3() -> S3TestServer {
    S3TestServer::start().await.unwrap()
}

pub struct Env {
    pub kind: Kind,
    pub store: BlobStore,
    pub data_dir: tempfile::TempDir,
    pub s3: Option<S3TestServer>,
    pub key: Option<&'static str>,
}

impl Env {
    pub async fn new(kind: Kind, key: Option<&'static str>) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let s3 = match kind {
            Kind::Local => None,
            Kind::S3 => Some(start_s3().await),
        };
        let store = open_store(kind, &data_dir, s3.as_ref(), key).await.unwrap();
        Env { kind, store, data_dir, s3, key }
    }

    pub fn part_size(&self) -> u64 {
        part_size(self.kind)
    }

    pub fn config(&self, key_file_content: Option<&str>) -> BlobConfig {
        config(self.kind, &self.data_dir, key_file_content)
    }

    pub fn options(&self) -> BlobOptions {
        options(self.kind, self.s3.as_ref())
    }

    /// Another store over the same storage, with this key file content (or none).
    pub async fn open(&self, key_file_content: Option<&str>) -> cairn_blob::Result<BlobStore> {
        open_store(self.kind, &self.data_dir, self.s3.as_ref(), key_file_content).await
    }

    /// Where the stored object of `d` lies on this machine's disk.
    pub fn stored_path(&self, d: &Digest) -> PathBuf {
        match &self.s3 {
            None => self.data_dir.path().join("blobs").join(object_key(d)),
            Some(s3) => s3.object_path(&format!("models/{}", object_key(d))),
        }
    }

    /// A stray staging object, as a crash between completing and publishing leaves on S3.
    pub fn plant_staging(&self) {
        let dir = match &self.s3 {
            None => self.data_dir.path().join("blobs/.staging"),
            Some(s3) => s3.object_path("models/staging"),
        };
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(uuid::Uuid::new_v4().to_string()), b"left over").unwrap();
    }

    pub fn encrypted(&self) -> bool {
        self.key.is_some()
    }

    /// A multi-part size that also straddles encryption segments.
    pub fn multi_part_size(&self) -> usize {
        (2 * self.part_size() + 12_345) as usize
    }
}

/// Part size the tests use: small locally, S3's realistic minimum on S3.
fn part_size(kind: Kind) -> u64 {
    match kind {
        Kind::Local => 2 * SEGMENT,
        Kind::S3 => S3_MIN_PART_SIZE,
    }
}

fn config(kind: Kind, data_dir: &tempfile::TempDir, key_file_content: Option<&str>) -> BlobConfig {
    let encryption_key_file = key_file_content.map(|content| {
        let path = data_dir.path().join(format!("key-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, content).unwrap();
        path
    });
    let url = match kind {
        Kind::Local => None,
        Kind::S3 => Some(format!("s3://{S3_BUCKET}/models")),
    };
    BlobConfig { url, data_dir: data_dir.path().to_path_buf(), encryption_key_file }
}

fn options(kind: Kind, s3: Option<&S3TestServer>) -> BlobOptions {
    BlobOptions { part_size: Some(part_size(kind)), s3: s3.map(S3TestServer::options).unwrap_or_default() }
}

async fn open_store(
    kind: Kind,
    data_dir: &tempfile::TempDir,
    s3: Option<&S3TestServer>,
    key_file_content: Option<&str>,
) -> cairn_blob::Result<BlobStore> {
    BlobStore::open_with(&config(kind, data_dir, key_file_content), &options(kind, s3)).await
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A body in awkward chunk sizes, as a network delivers it.
pub fn body(data: &[u8]) -> BoxStream<'static, std::io::Result<Bytes>> {
    let chunks: Vec<std::io::Result<Bytes>> = data.chunks(7_919).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    futures::stream::iter(chunks).boxed()
}

pub async fn put(store: &BlobStore, data: &[u8]) -> Digest {
    let d = Digest::of(data);
    store.put(&d, data.len() as u64, body(data)).await.unwrap();
    d
}

pub async fn read(store: &BlobStore, d: &Digest, range: Option<std::ops::Range<u64>>) -> cairn_blob::Result<Vec<u8>> {
    let reader = store.get(d, range).await?;
    let chunks: Vec<Bytes> = reader.stream.try_collect().await?;
    Ok(chunks.concat())
}

/// Everything a full read yields before it fails (or all of it), and the error if any.
pub async fn read_until_error(store: &BlobStore, d: &Digest) -> (Vec<u8>, Option<cairn_blob::BlobError>) {
    let mut stream = match store.get(d, None).await {
        Ok(r) => r.stream,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => got.extend_from_slice(&c),
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

pub async fn listed(store: &BlobStore) -> Vec<cairn_blob::ListedBlob> {
    let mut all: Vec<_> = store.list().try_collect().await.unwrap();
    all.sort_by_key(|l| l.digest);
    all
}

pub fn key_id(key_hex: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"cairn-blob-key");
    h.update(hex::decode(key_hex).unwrap());
    hex::encode(&h.finalize()[..8])
}
