//! A local directory as a version's file tree: which files it holds (walking), their
//! SHA-256 (hashing, streamed), and where a version's file may be written (joining a
//! manifest path under an output directory without ever leaving it).

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use cairn_core::manifest::FilePath;
use sha2::{Digest as _, Sha256};

/// The suffix of a download that has not been verified yet.
pub const PARTIAL_SUFFIX: &str = ".cairn-partial";

/// A regular file found under the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Its path relative to the root, `/`-separated.
    pub path: FilePath,
    /// Where its bytes are (for a symbolic link inside the root, the link itself: opening
    /// it reads the target).
    pub disk: PathBuf,
    /// Size in bytes when walked.
    pub size: u64,
}

/// Something under the root that is not pushed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Relative path, as well as it can be shown.
    pub path: String,
    /// Why it is not pushed.
    pub reason: &'static str,
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Regular files (and links to regular files inside the root), sorted by path.
    pub files: Vec<LocalFile>,
    /// What was left out, and why.
    pub skipped: Vec<Skipped>,
}

/// Walks `root`: every regular file, with its path relative to `root`. Symbolic links to
/// files inside the root are pushed as files; links to directories inside the root are
/// skipped (their files are pushed from where they really are), dangling links and special
/// files are skipped, and all of these are reported. Fails on a link that leads outside
/// the root and on a name that cannot be a version path (not UTF-8, a backslash, a control
/// character, …), since pushing without it would silently give a different model.
pub fn walk(root: &Path) -> anyhow::Result<Walk> {
    let meta = std::fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let real_root = root.canonicalize().with_context(|| format!("cannot resolve {}", root.display()))?;
    let mut out = Walk::default();
    let mut refused = Vec::new();
    walk_dir(root, &real_root, "", &mut out, &mut refused)?;
    if !refused.is_empty() {
        bail!("cannot push {}:\n  {}", root.display(), refused.join("\n  "));
    }
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk_dir(dir: &Path, real_root: &Path, rel: &str, out: &mut Walk, refused: &mut Vec<String>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    if entries.is_empty() && !rel.is_empty() {
        out.skipped.push(Skipped { path: format!("{rel}/"), reason: "empty directory (a version holds files only)" });
    }
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            refused.push(format!("{rel}/{}: the name is not UTF-8", name.to_string_lossy()));
            continue;
        };
        let child = if rel.is_empty() { name.to_owned() } else { format!("{rel}/{name}") };
        let disk = entry.path();
        let meta = std::fs::symlink_metadata(&disk).with_context(|| format!("cannot read {}", disk.display()))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            walk_dir(&disk, real_root, &child, out, refused)?;
            continue;
        }
        let size = if kind.is_symlink() {
            let Ok(target) = disk.canonicalize() else {
                out.skipped.push(Skipped { path: child, reason: "symbolic link to nothing" });
                continue;
            };
            if !target.starts_with(real_root) {
                refused.push(format!("{child}: symbolic link to {}, outside the directory", target.display()));
                continue;
            }
            let target_meta =
                std::fs::metadata(&target).with_context(|| format!("cannot read {}", target.display()))?;
            if target_meta.is_dir() {
                out.skipped.push(Skipped {
                    path: child,
                    reason: "symbolic link to a directory (its files are pushed where they are)",
                });
                continue;
            }
            if !target_meta.is_file() {
                out.skipped.push(Skipped { path: child, reason: "symbolic link to a special file" });
                continue;
            }
            target_meta.len()
        } else if kind.is_file() {
            meta.len()
        } else {
            out.skipped.push(Skipped { path: child, reason: "not a regular file (socket, pipe or device)" });
            continue;
        };
        if child.ends_with(PARTIAL_SUFFIX) {
            out.skipped.push(Skipped { path: child, reason: "an unfinished `cairn pull` download" });
            continue;
        }
        match FilePath::parse(&child) {
            Ok(path) => out.files.push(LocalFile { path, disk, size }),
            Err(e) => refused.push(e.to_string()),
        }
    }
    Ok(())
}

/// SHA-256 of a reader's bytes, streamed in 1 MiB reads; `progress` hears of each read.
/// Returns the digest (lower-case hex) and the byte count.
pub fn hash_reader(mut r: impl Read, mut progress: impl FnMut(u64)) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
        progress(n as u64);
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// SHA-256 (hex) and size of a file.
pub fn hash_file(path: &Path, progress: impl FnMut(u64)) -> anyhow::Result<(String, u64)> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    hash_reader(f, progress).with_context(|| format!("cannot read {}", path.display()))
}

/// Where the version file `path` goes under `root`. Paths are validated when parsed, but
/// the joined path is checked again: only normal components, nothing above `root`.
pub fn destination(root: &Path, path: &FilePath) -> anyhow::Result<PathBuf> {
    let mut out = root.to_path_buf();
    for seg in path.as_str().split('/') {
        let mut comps = Path::new(seg).components();
        match (comps.next(), comps.next()) {
            (Some(Component::Normal(c)), None) if c == seg => out.push(c),
            _ => bail!("refusing to write {:?}: it would land outside {}", path.as_str(), root.display()),
        }
    }
    if !out.starts_with(root) || out == root {
        bail!("refusing to write {:?}: it would land outside {}", path.as_str(), root.display());
    }
    Ok(out)
}

/// Checks that the directory `dir` (already created) really is inside `root` once symbolic
/// links are resolved, so that a link planted in the output tree cannot redirect a write.
pub fn check_inside(root: &Path, dir: &Path) -> anyhow::Result<()> {
    let real_root = root.canonicalize().with_context(|| format!("cannot resolve {}", root.display()))?;
    let real = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
    if !real.starts_with(&real_root) {
        bail!(
            "refusing to write into {}: it resolves to {}, outside {}",
            dir.display(),
            real.display(),
            root.display()
        );
    }
    Ok(())
}

/// The partial download next to `dest`: `<dest>.cairn-partial`.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(PARTIAL_SUFFIX);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(w: &Walk) -> Vec<&str> {
        w.files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn walks_nested_dirs_with_slash_paths_in_byte_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("weights/shards")).unwrap();
        std::fs::create_dir_all(d.path().join("empty")).unwrap();
        std::fs::write(d.path().join("config.json"), "{}").unwrap();
        std::fs::write(d.path().join("B.txt"), "b").unwrap();
        std::fs::write(d.path().join("weights/shards/0.bin"), "0000").unwrap();
        std::fs::write(d.path().join("weights/a.bin"), "a").unwrap();
        std::fs::write(d.path().join("weights/a.bin.cairn-partial"), "a").unwrap();
        let w = walk(d.path()).unwrap();
        assert_eq!(paths(&w), ["B.txt", "config.json", "weights/a.bin", "weights/shards/0.bin"]);
        assert_eq!(w.files[3].size, 4);
        let skipped: Vec<&str> = w.skipped.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(skipped, ["empty/", "weights/a.bin.cairn-partial"]);
        // A trailing slash or a `.` in the root changes nothing.
        let again = walk(&d.path().join("weights/../.")).unwrap();
        assert_eq!(paths(&again), paths(&w));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_inside_are_files_outside_are_refused() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("model");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/real.bin"), "real").unwrap();
        symlink("sub/real.bin", root.join("link.bin")).unwrap();
        symlink("sub", root.join("dirlink")).unwrap();
        symlink("nowhere", root.join("dangling")).unwrap();
        let w = walk(&root).unwrap();
        assert_eq!(paths(&w), ["link.bin", "sub/real.bin"]);
        assert_eq!(w.files[0].size, 4);
        let mut reasons: Vec<(&str, &str)> = w.skipped.iter().map(|s| (s.path.as_str(), s.reason)).collect();
        reasons.sort();
        assert_eq!(reasons[0].0, "dangling");
        assert_eq!(reasons[1].0, "dirlink");

        std::fs::write(d.path().join("secret"), "outside").unwrap();
        symlink("../../secret", root.join("sub/escape")).unwrap();
        let err = walk(&root).unwrap_err().to_string();
        assert!(err.contains("sub/escape") && err.contains("outside the directory"), "{err}");
        // The root itself may be a link.
        std::fs::remove_file(root.join("sub/escape")).unwrap();
        symlink(&root, d.path().join("root-link")).unwrap();
        assert_eq!(paths(&walk(&d.path().join("root-link")).unwrap()), ["link.bin", "sub/real.bin"]);
    }

    #[cfg(unix)]
    #[test]
    fn names_that_cannot_be_version_paths_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        for bad in [&b"back\\slash"[..], b"new\nline", b"\xff\xfe"] {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join("ok.txt"), "x").unwrap();
            std::fs::write(d.path().join(std::ffi::OsStr::from_bytes(bad)), "x").unwrap();
            let err = walk(d.path()).unwrap_err().to_string();
            assert!(err.contains("cannot push"), "{err}");
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x"), "x").unwrap();
        assert!(walk(&d.path().join("x")).unwrap_err().to_string().contains("not a directory"));
    }

    #[test]
    fn hashes_stream() {
        let mut seen = 0;
        let (h, n) = hash_reader(&b"abc"[..], |k| seen += k).unwrap();
        assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!((n, seen), (3, 3));
    }

    #[test]
    fn destinations_stay_under_the_root() {
        let root = Path::new("out");
        let p = FilePath::parse("weights/model.bin").unwrap();
        assert_eq!(destination(root, &p).unwrap(), Path::new("out/weights/model.bin"));
        // Segments a FilePath accepts but a platform might read differently are refused.
        for tricky in ["a/C:", "..."] {
            if let Ok(p) = FilePath::parse(tricky) {
                let d = destination(root, &p);
                assert!(d.is_err() || d.unwrap().starts_with(root));
            }
        }
        assert_eq!(partial_path(Path::new("out/a.bin")), Path::new("out/a.bin.cairn-partial"));
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_link_cannot_redirect_writes() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::os::unix::fs::symlink(d.path(), out.join("up")).unwrap();
        assert!(check_inside(&out, &out.join("up")).is_err());
        std::fs::create_dir_all(out.join("fine")).unwrap();
        check_inside(&out, &out.join("fine")).unwrap();
    }
}
