//! Support for tests of this crate and of its users (feature `test-support`): an S3-compatible
//! server embedded in the test process, and the facts about stored objects that a test needs to
//! find one on disk and damage it on purpose.
//!
//! [`S3TestServer`] serves `s3s-fs` over a temporary directory on a loopback port, so S3 tests
//! need no external service, no network and no `AWS_*` environment: pass
//! [`S3TestServer::options`] to [`BlobStore::open_with`](crate::BlobStore::open_with).
//!
//! Never enable this feature in a production build: the server accepts one fixed, public key
//! pair.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cairn_blob::test_support::S3TestServer;
//! use cairn_blob::{BlobConfig, BlobOptions, BlobStore};
//!
//! let s3 = S3TestServer::start().await?;
//! let data_dir = tempfile::tempdir()?;
//! let config = BlobConfig { url: Some(s3.url("models")), ..BlobConfig::local(data_dir.path()) };
//! let options = BlobOptions { part_size: Some(5 * 1024 * 1024), s3: s3.options() };
//! let store = BlobStore::open_with(&config, &options).await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

use crate::S3Options;

/// The one bucket the test server has.
pub const S3_BUCKET: &str = "cairn";
/// The access key id the test server accepts.
pub const S3_ACCESS_KEY: &str = "cairn-test";
/// The secret key the test server accepts.
pub const S3_SECRET_KEY: &str = "cairn-test-secret-key";
/// The region the test server's clients sign for.
pub const S3_REGION: &str = "us-east-1";
/// The smallest part size the store accepts on S3 (S3's minimum for all but the last part).
pub const S3_MIN_PART_SIZE: u64 = crate::s3::MIN_PART_SIZE;
/// Bytes before the first encrypted segment of an encrypted object; a byte flipped after them
/// makes the blob fail authentication.
pub const ENCRYPTION_HEADER_LEN: u64 = crate::crypto::HEADER_LEN;

pub use crate::object_key;

/// An S3-compatible server (`s3s-fs` over a temporary directory) on `127.0.0.1`, running on the
/// current Tokio runtime. Dropping it stops accepting connections and deletes its directory.
pub struct S3TestServer {
    endpoint: String,
    root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl S3TestServer {
    /// Starts a server with one empty bucket, [`S3_BUCKET`], on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir(root.path().join(S3_BUCKET))?;
        let fs = s3s_fs::FileSystem::new(root.path()).map_err(|e| std::io::Error::other(format!("s3s-fs: {e:?}")))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(S3_ACCESS_KEY, S3_SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                // As real S3 servers do: without it, a response written in two pieces waits
                // for the client's delayed ACK (40 ms on Linux) before its second piece.
                let _ = socket.set_nodelay(true);
                let service = service.clone();
                tokio::spawn(async move {
                    // A connection the client drops mid-request is not the server's failure.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Ok(Self { endpoint, root, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `s3://<bucket>/<prefix>`, the blob URL of a store under `prefix` on this server.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{S3_BUCKET}/{prefix}")
    }

    /// Explicit settings that reach this server, ignoring the `AWS_*` environment.
    pub fn options(&self) -> S3Options {
        S3Options {
            from_env: false,
            endpoint: Some(self.endpoint.clone()),
            region: Some(S3_REGION.into()),
            access_key_id: Some(S3_ACCESS_KEY.into()),
            secret_access_key: Some(S3_SECRET_KEY.into()),
            session_token: None,
        }
    }

    /// The directory `s3s-fs` serves; bucket `b` is its subdirectory `b`.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The file that holds object `key` of [`S3_BUCKET`].
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.path().join(S3_BUCKET).join(key)
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for S3TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3TestServer").field("endpoint", &self.endpoint).field("root", &self.root()).finish()
    }
}
