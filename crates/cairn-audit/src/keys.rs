//! Ed25519 keys: the server's signing key (PKCS#8 PEM in a file of mode 0600) and public
//! keys (SPKI PEM, the format `openssl pkey -pubout` writes).

use std::fs;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer as _, Verifier as _};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// Why a key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not a key of the expected kind.
    #[error("{0}")]
    Format(String),
}

/// The server's signing key.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("key_id", &self.public().key_id()).finish_non_exhaustive()
    }
}

/// What [`SigningKey::load_or_create`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFile {
    /// The file did not exist and was written now.
    pub created: bool,
    /// The file can be read by its group or by others (mode & 0o077 ≠ 0).
    pub loose_permissions: bool,
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::fill(&mut *seed);
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self)
            .map_err(|e| KeyError::Format(format!("not an Ed25519 PKCS#8 PEM private key: {e}")))
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        self.0
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| KeyError::Format(format!("cannot encode the key: {e}")))
    }

    /// Loads the key at `path`, or, when there is no file, generates one and writes it with
    /// mode 0600 (created exclusively, so two processes starting at once agree on one key).
    pub fn load_or_create(path: &Path) -> Result<(Self, KeyFile), KeyError> {
        let io = |source| KeyError::Io { path: path.display().to_string(), source };
        match fs::read_to_string(path) {
            Ok(text) => {
                let key = Self::from_pem(&text).map_err(|e| KeyError::Format(format!("{}: {e}", path.display())))?;
                Ok((key, KeyFile { created: false, loose_permissions: loose(path) }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                let pem = key.to_pem()?;
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(io)?;
                }
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                let mut f = open_private(&tmp).map_err(io)?;
                f.write_all(pem.as_bytes()).and_then(|()| f.sync_all()).map_err(io)?;
                drop(f);
                // A hard link publishes the complete file only if no other process won.
                match fs::hard_link(&tmp, path) {
                    Ok(()) => {
                        let _ = fs::remove_file(&tmp);
                        Ok((key, KeyFile { created: true, loose_permissions: false }))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let _ = fs::remove_file(&tmp);
                        Self::load_or_create(path)
                    }
                    Err(e) => {
                        let _ = fs::remove_file(&tmp);
                        Err(io(e))
                    }
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `msg`; the signature in standard base64.
    pub fn sign(&self, msg: &[u8]) -> String {
        B64.encode(self.0.sign(msg).to_bytes())
    }
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(unix)]
fn loose(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

#[cfg(not(unix))]
fn loose(_: &Path) -> bool {
    false
}

/// A public key that signatures are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Reads a public key: SPKI PEM (`-----BEGIN PUBLIC KEY-----`), or the 32 raw bytes in
    /// standard base64 or hex.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            return ed25519_dalek::VerifyingKey::from_public_key_pem(text)
                .map(Self)
                .map_err(|e| KeyError::Format(format!("not an Ed25519 SPKI PEM public key: {e}")));
        }
        let raw = if text.len() == 64 { hex::decode(text).ok() } else { B64.decode(text).ok() };
        let raw: [u8; 32] = raw
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| KeyError::Format("a public key is SPKI PEM, or 32 bytes in base64 or hex".into()))?;
        ed25519_dalek::VerifyingKey::from_bytes(&raw)
            .map(Self)
            .map_err(|e| KeyError::Format(format!("not an Ed25519 public key: {e}")))
    }

    /// Reads a public key file (see [`Self::parse`]).
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text =
            fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.display().to_string(), source })?;
        Self::parse(&text).map_err(|e| KeyError::Format(format!("{}: {e}", path.display())))
    }

    /// The key as SPKI PEM.
    pub fn to_pem(&self) -> String {
        self.0.to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF).unwrap_or_default()
    }

    /// The 32 raw bytes in standard base64.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0.as_bytes())
    }

    /// A short, stable name for the key: `ed25519:` and the first 16 bytes of the SHA-256 of
    /// its raw bytes, in hex.
    pub fn key_id(&self) -> String {
        let d = Sha256::digest(self.0.as_bytes());
        format!("ed25519:{}", hex::encode(&d[..16]))
    }

    /// Whether `signature` (standard base64) is this key's signature over `msg` (strict
    /// verification: no malleable or small-order encodings).
    pub fn verify(&self, msg: &[u8], signature: &str) -> bool {
        let Ok(bytes) = B64.decode(signature.trim()) else { return false };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(&bytes) else { return false };
        self.0.verify_strict(msg, &sig).is_ok() && self.0.verify(msg, &sig).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_right_key_and_message() {
        let k = SigningKey::generate();
        let sig = k.sign(b"hello");
        assert!(k.public().verify(b"hello", &sig));
        assert!(!k.public().verify(b"hellO", &sig));
        assert!(!SigningKey::generate().public().verify(b"hello", &sig));
        assert!(!k.public().verify(b"hello", "not base64!"));
        let mut raw = B64.decode(&sig).unwrap();
        raw[0] ^= 1;
        assert!(!k.public().verify(b"hello", &B64.encode(raw)));
    }

    #[test]
    fn keys_round_trip_through_pem_base64_and_hex() {
        let k = SigningKey::generate();
        let pem = k.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let k2 = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(k.public(), k2.public());
        let p = k.public();
        assert!(p.to_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(PublicKey::parse(&p.to_pem()).unwrap(), p);
        assert_eq!(PublicKey::parse(&p.to_base64()).unwrap(), p);
        assert_eq!(PublicKey::parse(&hex::encode(B64.decode(p.to_base64()).unwrap())).unwrap(), p);
        assert!(PublicKey::parse("garbage").is_err());
        assert!(SigningKey::from_pem(&p.to_pem()).is_err());
        assert!(p.key_id().starts_with("ed25519:") && p.key_id().len() == 8 + 32);
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing.pem");
        let (k1, f1) = SigningKey::load_or_create(&path).unwrap();
        assert!(f1.created && !f1.loose_permissions);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (k2, f2) = SigningKey::load_or_create(&path).unwrap();
        assert!(!f2.created);
        assert_eq!(k1.public(), k2.public());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(SigningKey::load_or_create(&path).unwrap().1.loose_permissions);
        fs::write(&path, "not a key").unwrap();
        let err = SigningKey::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("PKCS#8"), "{err}");
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary file is left");
    }
}
