//! Where the CLI keeps the server URL and API key: a TOML file readable only by its owner.
//! `CAIRN_URL` and `CAIRN_TOKEN` override it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The stored login.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Server base URL.
    pub url: Option<String>,
    /// API key.
    pub token: Option<String>,
}

/// The credentials file: `$CAIRN_CONFIG_DIR/credentials.toml`, else
/// `$XDG_CONFIG_HOME/cairn/credentials.toml`, else `~/.config/cairn/credentials.toml`.
pub fn path() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("CAIRN_CONFIG_DIR") {
        return Ok(PathBuf::from(d).join("credentials.toml"));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(d).join("cairn").join("credentials.toml"));
    }
    match std::env::var_os("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".config").join("cairn").join("credentials.toml")),
        None => bail!("cannot find a config directory: set CAIRN_CONFIG_DIR"),
    }
}

/// Reads the stored credentials (empty when there are none).
pub fn load() -> anyhow::Result<Credentials> {
    let p = path()?;
    match std::fs::read_to_string(&p) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("{} is not valid", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

/// Writes credentials atomically with mode 0600.
pub fn save(c: &Credentials) -> anyhow::Result<PathBuf> {
    let p = path()?;
    let dir = p.parent().context("credentials path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(".credentials.toml.tmp");
    let text = toml::to_string(c)?;
    write_private(&tmp, text.as_bytes())?;
    std::fs::rename(&tmp, &p).with_context(|| format!("cannot write {}", p.display()))?;
    Ok(p)
}

#[cfg(unix)]
/// Writes `bytes` to a new file `p` readable by its owner only (mode 0600; any old file at
/// `p` is replaced, whatever its mode).
pub(crate) fn write_private(p: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(p);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .with_context(|| format!("cannot create {}", p.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
/// Writes `bytes` to a new file `p` readable by its owner only (mode 0600; any old file at
/// `p` is replaced, whatever its mode).
pub(crate) fn write_private(p: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(p, bytes).with_context(|| format!("cannot create {}", p.display()))
}

/// Removes the stored credentials; true if there were any.
pub fn remove() -> anyhow::Result<bool> {
    let p = path()?;
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", p.display())),
    }
}

/// The URL and token to use: environment first, then the stored file.
pub fn resolve() -> anyhow::Result<(String, Option<String>)> {
    let stored = load()?;
    let url = std::env::var("CAIRN_URL").ok().filter(|s| !s.is_empty()).or(stored.url);
    let token = std::env::var("CAIRN_TOKEN").ok().filter(|s| !s.is_empty()).or(stored.token);
    let Some(url) = url else {
        bail!("no server configured: run `cairn login --url <URL>` or set CAIRN_URL");
    };
    Ok((url, token))
}

/// Whether the API key in use comes from `CAIRN_TOKEN` rather than the stored file.
pub fn token_from_env() -> bool {
    std::env::var("CAIRN_TOKEN").is_ok_and(|s| !s.is_empty())
}

/// Replaces the stored API key, keeping the stored URL; returns the file's path.
pub fn replace_token(token: &str) -> anyhow::Result<PathBuf> {
    let mut stored = load()?;
    stored.token = Some(token.to_owned());
    save(&stored)
}
