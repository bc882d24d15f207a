//! An S3-compatible server (`s3s-fs`, the one the tests embed) as a process of its own, for
//! benchmarks and manual trials of the S3 blob store: `bench/artifacts/run.sh` with
//! `BACKEND=s3` starts it next to `cairn serve`.
//!
//! ```sh
//! cargo run --release -p cairn-blob --features test-support --example s3_server
//! ```
//!
//! It prints the `AWS_*` settings that reach it, one `KEY=value` per line, then serves until it
//! is killed. Its objects live in a temporary directory under `TMPDIR`, which a kill leaves
//! behind: point `TMPDIR` at a directory you remove afterwards. The key pair is fixed and
//! public: never expose this server beyond loopback.

use cairn_blob::test_support::{S3_ACCESS_KEY, S3_BUCKET, S3_REGION, S3_SECRET_KEY, S3TestServer};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let server = S3TestServer::start().await?;
    println!("AWS_ENDPOINT_URL={}", server.endpoint());
    println!("AWS_ACCESS_KEY_ID={S3_ACCESS_KEY}");
    println!("AWS_SECRET_ACCESS_KEY={S3_SECRET_KEY}");
    println!("AWS_REGION={S3_REGION}");
    println!("S3_BUCKET={S3_BUCKET}");
    println!("S3_ROOT={}", server.root().display());
    std::future::pending::<()>().await;
    Ok(())
}
