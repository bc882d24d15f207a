//! Blobs in a local directory.
//!
//! `<root>/sha256/<hex[0..2]>/<hex>` holds committed blobs; `<root>/.staging/<upload id>/`
//! holds uploads in progress: one `data` file that every part writes into at its own offset
//! (so completing needs no copy), and a `part-<n>` marker per part, written (atomically, after
//! the part's bytes are fsynced) only when the part was received whole. Publishing is a rename
//! of `data` into `sha256/…` followed by an fsync of the directory, so a blob is either absent or
//! complete, whenever the process dies.

use std::io::{ErrorKind, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use uuid::Uuid;

use crate::backend::{Location, ObjectInfo, Staging, parse_blob_name};
use crate::{BlobError, Digest, ListedBlob, PartReceipt, Result};

const READ_CHUNK: usize = 64 * 1024;

pub(crate) struct LocalBackend {
    root: PathBuf,
}

pub(crate) struct LocalPartWriter {
    file: tokio::fs::File,
    dir: PathBuf,
    part: u32,
}

impl LocalPartWriter {
    pub async fn write(&mut self, bytes: Bytes) -> Result<()> {
        self.file.write_all(&bytes).await?;
        Ok(())
    }

    pub async fn finish(mut self) -> Result<String> {
        self.file.flush().await?;
        self.file.sync_data().await?;
        let etag = Uuid::new_v4().simple().to_string();
        let tmp = self.dir.join(format!("part-{}.{etag}.tmp", self.part));
        let marker = self.dir.join(format!("part-{}", self.part));
        let content = etag.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::write(&tmp, content)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &marker)?;
            Ok(())
        })
        .await
        .map_err(join_error)??;
        Ok(etag)
    }
}

impl LocalBackend {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn describe(&self) -> String {
        format!("local {}", self.root.display())
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(crate::backend::blob_name(digest))
    }

    fn staging_root(&self) -> PathBuf {
        self.root.join(".staging")
    }

    fn staging_dir(&self, id: Uuid) -> PathBuf {
        self.staging_root().join(id.to_string())
    }

    fn path(&self, loc: Location) -> PathBuf {
        match loc {
            Location::Blob(d) => self.blob_path(&d),
            Location::Staging(id) => self.staging_dir(id).join("data"),
        }
    }

    pub async fn ping(&self) -> Result<()> {
        let staging = self.staging_root();
        tokio::fs::create_dir_all(self.root.join("sha256")).await?;
        tokio::fs::create_dir_all(&staging).await?;
        let probe = staging.join(format!("ping-{}", Uuid::new_v4()));
        tokio::fs::write(&probe, b"ping").await?;
        tokio::fs::remove_file(&probe).await?;
        Ok(())
    }

    pub async fn head(&self, loc: Location) -> Result<Option<ObjectInfo>> {
        match tokio::fs::metadata(self.path(loc)).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo { size: m.len() })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn read(&self, loc: Location, range: Range<u64>) -> Result<BoxStream<'static, Result<Bytes>>> {
        let mut file = match tokio::fs::File::open(self.path(loc)).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found(loc)),
            Err(e) => return Err(e.into()),
        };
        file.seek(SeekFrom::Start(range.start)).await?;
        let remaining = range.end - range.start;
        let stream = futures::stream::try_unfold((file, remaining), |(mut file, remaining)| async move {
            if remaining == 0 {
                return Ok(None);
            }
            let want = usize::try_from(remaining).unwrap_or(usize::MAX).min(READ_CHUNK);
            let mut buf = BytesMut::zeroed(want);
            let n = file.read(&mut buf).await?;
            if n == 0 {
                // Shorter than expected: end here, the reader above reports the truncation.
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((buf.freeze(), (file, remaining - n as u64))))
        });
        Ok(stream.boxed())
    }

    pub async fn begin(&self, id: Uuid) -> Result<Staging> {
        let dir = self.staging_dir(id);
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::File::create(dir.join("data")).await?;
        Ok(Staging { id, multipart: None })
    }

    pub async fn open_part(&self, staging: &Staging, part: u32, offset: u64) -> Result<LocalPartWriter> {
        let dir = self.staging_dir(staging.id);
        match tokio::fs::remove_file(dir.join(format!("part-{part}"))).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let mut file = match tokio::fs::OpenOptions::new().write(true).open(dir.join("data")).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(unknown_upload(staging)),
            Err(e) => return Err(e.into()),
        };
        file.seek(SeekFrom::Start(offset)).await?;
        Ok(LocalPartWriter { file, dir, part })
    }

    pub async fn seal(&self, staging: &Staging, parts: &[PartReceipt]) -> Result<()> {
        let dir = self.staging_dir(staging.id);
        if !tokio::fs::try_exists(dir.join("data")).await? {
            return Err(unknown_upload(staging));
        }
        for p in parts {
            match tokio::fs::read_to_string(dir.join(format!("part-{}", p.part))).await {
                Ok(etag) if etag == p.etag => {}
                Ok(_) => {
                    return Err(BlobError::InvalidPart(format!(
                        "part {} was uploaded again after this receipt was issued; complete with the latest receipt",
                        p.part
                    )));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(BlobError::InvalidPart(format!(
                        "part {} is not stored (never uploaded, or its last upload failed); upload it again",
                        p.part
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub async fn publish(&self, staging: &Staging, digest: &Digest) -> Result<()> {
        let dir = self.staging_dir(staging.id);
        let target = self.blob_path(digest);
        let sha_root = self.root.join("sha256");
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let parent = target.parent().expect("blob path has a parent");
            std::fs::create_dir_all(parent)?;
            let data = dir.join("data");
            std::fs::File::open(&data)?.sync_all()?;
            std::fs::rename(&data, &target)?;
            // The rename is durable only once the directories that changed are.
            sync_dir(parent)?;
            sync_dir(&sha_root)?;
            std::fs::remove_dir_all(&dir)?;
            Ok(())
        })
        .await
        .map_err(join_error)??;
        Ok(())
    }

    pub async fn discard(&self, staging: &Staging) -> Result<()> {
        match tokio::fs::remove_dir_all(self.staging_dir(staging.id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            match std::fs::remove_file(&path) {
                Ok(()) => sync_dir(path.parent().expect("blob path has a parent")),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(join_error)??;
        Ok(())
    }

    pub fn list(&self) -> BoxStream<'static, Result<ListedBlob>> {
        let root = self.root.join("sha256");
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<ListedBlob>>(64);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = walk_blobs(&root, &tx) {
                let _ = tx.blocking_send(Err(e.into()));
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed()
    }

    pub async fn sweep(&self, older_than: Duration) -> Result<u64> {
        let staging = self.staging_root();
        let removed = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let entries = match std::fs::read_dir(&staging) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            };
            let now = SystemTime::now();
            let mut removed = 0;
            for entry in entries {
                let entry = entry?;
                let path = entry.path();
                let newest = newest_mtime(&path)?;
                let age = now.duration_since(newest).unwrap_or_default();
                if age < older_than {
                    continue;
                }
                let result = if entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                match result {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(removed)
        })
        .await
        .map_err(join_error)??;
        Ok(removed)
    }
}

fn walk_blobs(root: &Path, tx: &tokio::sync::mpsc::Sender<Result<ListedBlob>>) -> std::io::Result<()> {
    let prefixes = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for prefix in prefixes {
        let prefix = prefix?;
        let Some(dir_name) = prefix.file_name().to_str().map(str::to_owned) else { continue };
        if !prefix.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(prefix.path())? {
            let file = file?;
            let Some(digest) = file.file_name().to_str().and_then(|name| parse_blob_name(&dir_name, name)) else {
                continue;
            };
            let meta = match file.metadata() {
                Ok(m) if m.is_file() => m,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let listed = ListedBlob {
                digest,
                stored_size: meta.len(),
                last_modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            };
            if tx.blocking_send(Ok(listed)).is_err() {
                return Ok(()); // the listing was dropped
            }
        }
    }
    Ok(())
}

/// Newest modification time of a staging entry and what is directly inside it.
fn newest_mtime(path: &Path) -> std::io::Result<SystemTime> {
    let meta = std::fs::symlink_metadata(path)?;
    let mut newest = meta.modified()?;
    if meta.is_dir() {
        for child in std::fs::read_dir(path)? {
            if let Ok(m) = child.and_then(|c| c.metadata())
                && let Ok(t) = m.modified()
            {
                newest = newest.max(t);
            }
        }
    }
    Ok(newest)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn join_error(e: tokio::task::JoinError) -> BlobError {
    BlobError::Io(std::io::Error::other(format!("blob storage task failed: {e}")))
}

fn not_found(loc: Location) -> BlobError {
    match loc {
        Location::Blob(d) => BlobError::NotFound(d),
        Location::Staging(id) => BlobError::InvalidPart(format!("upload {id} has no staged data (aborted or swept?)")),
    }
}

fn unknown_upload(staging: &Staging) -> BlobError {
    BlobError::InvalidPart(format!(
        "upload {} is unknown here: it was completed, aborted or swept, or the handle is from another store",
        staging.id
    ))
}
