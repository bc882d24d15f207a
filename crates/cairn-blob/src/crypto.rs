//! Encryption at rest: the key file, the stored-object header and AES-256-GCM segments.
//!
//! The STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015) is implemented here
//! directly on `aes-gcm` rather than through `aead-stream`: parts of one blob are encrypted
//! independently and in parallel, so every segment is sealed at an index computed from its
//! plaintext offset, and `aead-stream`'s stateful encryptor would only get in the way. The
//! nonce layout is the one `aead-stream` calls `StreamBE32`: 7-byte prefix ‖ 32-bit big-endian
//! segment counter ‖ 1 byte last-segment flag.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};
use sha2::Digest as _;
use zeroize::Zeroizing;

use crate::{BlobError, Digest, Result};

/// Plaintext bytes per segment.
pub(crate) const SEGMENT_SIZE: u64 = 64 * 1024;
/// AES-GCM tag appended to every segment.
pub(crate) const TAG_LEN: u64 = 16;
/// Bytes of the header at the start of every encrypted object.
pub(crate) const HEADER_LEN: u64 = 40;
const MAGIC: [u8; 8] = *b"CAIRNENC";
const FORMAT_VERSION: u8 = 1;
const NONCE_PREFIX_LEN: usize = 7;

/// Public identifier of a key: first 8 bytes of SHA-256("cairn-blob-key" ‖ key), shown as 16 hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KeyId([u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl KeyId {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let mut b = [0u8; 8];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(Self(b))
    }
}

/// One AES-256 key. The expanded key schedule is zeroized on drop (`aes-gcm`'s `zeroize`
/// feature); the raw bytes only ever live in `Zeroizing` buffers while the file is parsed.
pub(crate) struct Key {
    id: KeyId,
    cipher: Aes256Gcm,
}

impl Key {
    fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut h = sha2::Sha256::new();
        h.update(b"cairn-blob-key");
        h.update(bytes);
        let digest = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        let cipher = Aes256Gcm::new_from_slice(bytes).expect("a 32-byte slice is a valid AES-256 key");
        Self { id: KeyId(id), cipher }
    }

    pub(crate) fn id(&self) -> KeyId {
        self.id
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

/// The keys from the key file: the first is active (used for writing), all are accepted for reading.
pub(crate) struct Keyring {
    keys: Vec<Arc<Key>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| k.id)).finish()
    }
}

impl Keyring {
    /// Read a key file: one key per line as 64 hex characters; blank lines and lines starting
    /// with `#` are ignored. Errors name the file and line, never the content.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| BlobError::Config(format!("cannot read encryption key file {}: {e}", path.display())))?,
        );
        Self::parse(&text).map_err(|msg| BlobError::Config(format!("encryption key file {}: {msg}", path.display())))
    }

    pub(crate) fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut keys: Vec<Arc<Key>> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut raw = Zeroizing::new([0u8; 32]);
            if line.len() != 64 || hex::decode_to_slice(line, raw.as_mut()).is_err() {
                return Err(format!(
                    "line {}: expected a key of 64 hex characters (32 bytes), e.g. from `openssl rand -hex 32`",
                    n + 1
                ));
            }
            let key = Key::from_bytes(&raw);
            if keys.iter().any(|k| k.id == key.id) {
                return Err(format!("line {}: the same key appears twice (key id {})", n + 1, key.id));
            }
            keys.push(Arc::new(key));
        }
        if keys.is_empty() {
            return Err("no key found; put one key of 64 hex characters on the first line".into());
        }
        Ok(Self { keys })
    }

    pub(crate) fn active(&self) -> &Arc<Key> {
        &self.keys[0]
    }

    pub(crate) fn get(&self, id: KeyId) -> Option<&Arc<Key>> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// The header at the start of every encrypted object (40 bytes):
/// magic `CAIRNENC` (8) ‖ format version 1 (1) ‖ zero (3) ‖ segment size u32 BE (4) ‖
/// plaintext size u64 BE (8) ‖ key id (8) ‖ nonce prefix (7) ‖ zero (1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub key_id: KeyId,
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub segment_size: u64,
    pub plaintext_size: u64,
}

impl Header {
    pub(crate) fn new(key_id: KeyId, plaintext_size: u64) -> Self {
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        rand::fill(&mut nonce_prefix);
        Self { key_id, nonce_prefix, segment_size: SEGMENT_SIZE, plaintext_size }
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut out = [0u8; HEADER_LEN as usize];
        out[..8].copy_from_slice(&MAGIC);
        out[8] = FORMAT_VERSION;
        let segment = u32::try_from(self.segment_size).expect("segment size fits in u32");
        out[12..16].copy_from_slice(&segment.to_be_bytes());
        out[16..24].copy_from_slice(&self.plaintext_size.to_be_bytes());
        out[24..32].copy_from_slice(&self.key_id.0);
        out[32..39].copy_from_slice(&self.nonce_prefix);
        out
    }

    /// Whether stored bytes start like an encrypted object.
    pub(crate) fn has_magic(prefix: &[u8]) -> bool {
        prefix.starts_with(&MAGIC)
    }

    /// Parse a header from the first bytes of an object that starts with the magic.
    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() < HEADER_LEN as usize {
            return Err(format!("encrypted object shorter than its {HEADER_LEN}-byte header"));
        }
        if bytes[8] != FORMAT_VERSION {
            return Err(format!("unknown encryption format version {}", bytes[8]));
        }
        if bytes[9..12] != [0, 0, 0] || bytes[39] != 0 {
            return Err("reserved header bytes are not zero".into());
        }
        let segment_size = u64::from(u32::from_be_bytes(bytes[12..16].try_into().expect("4 bytes")));
        if segment_size == 0 || segment_size > 16 * 1024 * 1024 {
            return Err(format!("implausible segment size {segment_size}"));
        }
        let plaintext_size = u64::from_be_bytes(bytes[16..24].try_into().expect("8 bytes"));
        let key_id = KeyId(bytes[24..32].try_into().expect("8 bytes"));
        let nonce_prefix = bytes[32..39].try_into().expect("7 bytes");
        Ok(Self { key_id, nonce_prefix, segment_size, plaintext_size })
    }

    pub(crate) fn segment_count(&self) -> u64 {
        segment_count(self.plaintext_size, self.segment_size)
    }

    /// Plaintext length of segment `index`.
    pub(crate) fn segment_plain_len(&self, index: u64) -> u64 {
        (self.plaintext_size - index * self.segment_size).min(self.segment_size)
    }

    /// Offset of segment `index` in the stored object.
    pub(crate) fn segment_offset(&self, index: u64) -> u64 {
        HEADER_LEN + index * (self.segment_size + TAG_LEN)
    }

    pub(crate) fn stored_len(&self) -> u64 {
        encrypted_len(self.plaintext_size, self.segment_size)
    }
}

/// Segments in a blob of `size` bytes; an empty blob still has one (empty, authenticated) segment.
pub(crate) fn segment_count(size: u64, segment_size: u64) -> u64 {
    size.div_ceil(segment_size).max(1)
}

/// Stored size of an encrypted blob of `size` plaintext bytes.
pub(crate) fn encrypted_len(size: u64, segment_size: u64) -> u64 {
    HEADER_LEN + segment_count(size, segment_size) * TAG_LEN + size
}

/// Seals and opens the segments of one stored object.
#[derive(Clone)]
pub(crate) struct SegmentCipher {
    key: Arc<Key>,
    header: Header,
    /// Associated data of every segment: the header bytes ‖ the blob digest, so a segment
    /// cannot be moved to another blob or have its header (size, key id) changed.
    aad: [u8; HEADER_LEN as usize + 32],
}

impl SegmentCipher {
    pub(crate) fn new(key: Arc<Key>, header: Header, digest: &Digest) -> Self {
        let mut aad = [0u8; HEADER_LEN as usize + 32];
        aad[..HEADER_LEN as usize].copy_from_slice(&header.encode());
        aad[HEADER_LEN as usize..].copy_from_slice(digest.as_bytes());
        Self { key, header, aad }
    }

    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    fn nonce(&self, index: u64) -> Result<aes_gcm::aead::Nonce<Aes256Gcm>> {
        let counter = u32::try_from(index).map_err(|_| BlobError::InvalidPart("blob has too many segments".into()))?;
        let last = index + 1 == self.header.segment_count();
        let mut n = [0u8; 12];
        n[..NONCE_PREFIX_LEN].copy_from_slice(&self.header.nonce_prefix);
        n[7..11].copy_from_slice(&counter.to_be_bytes());
        n[11] = u8::from(last);
        Ok(n.into())
    }

    /// Encrypt segment `index` in place, appending its tag.
    pub(crate) fn seal(&self, index: u64, buf: &mut Vec<u8>) -> Result<()> {
        let nonce = self.nonce(index)?;
        self.key
            .cipher
            .encrypt_in_place(&nonce, &self.aad, buf)
            .map_err(|_| BlobError::Backend("AES-GCM encryption failed".into()))
    }

    /// Decrypt segment `index` in place (ciphertext ‖ tag → plaintext).
    pub(crate) fn open(&self, index: u64, buf: &mut Vec<u8>, digest: &Digest) -> Result<()> {
        let nonce = self.nonce(index).map_err(|_| corrupt(digest, "segment index out of range"))?;
        self.key.cipher.decrypt_in_place(&nonce, &self.aad, buf).map_err(|_| {
            corrupt(digest, &format!("segment {index} failed authentication (modified, truncated or moved ciphertext)"))
        })
    }
}

fn corrupt(digest: &Digest, reason: &str) -> BlobError {
    BlobError::Corrupt { digest: *digest, reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn key_file_first_key_is_active_and_errors_hide_content() {
        let ring = Keyring::parse(&format!("# rotated 2026-11\n{K2}\n\n{K1}\n")).unwrap();
        assert_eq!(ring.len(), 2);
        let k1 = Keyring::parse(K1).unwrap().active().id();
        assert!(ring.get(k1).is_some());
        assert_ne!(ring.active().id(), k1);
        assert_eq!(k1.to_string().len(), 16);
        let debug = format!("{ring:?}");
        assert!(!debug.contains(K1) && !debug.contains(K2), "{debug}");

        let secretish = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeZZ";
        let err = Keyring::parse(secretish).err().unwrap();
        assert!(err.contains("line 1") && !err.contains("0011"), "{err}");
        assert!(Keyring::parse("").is_err());
        assert!(Keyring::parse(&format!("{K1}\n{K1}")).is_err());
    }

    #[test]
    fn header_roundtrip_and_sizes() {
        let ring = Keyring::parse(K1).unwrap();
        let h = Header::new(ring.active().id(), 200_000);
        let bytes = h.encode();
        assert!(Header::has_magic(&bytes));
        assert_eq!(Header::decode(&bytes).unwrap(), h);
        assert_eq!(h.segment_count(), 4);
        assert_eq!(h.stored_len(), HEADER_LEN + 4 * TAG_LEN + 200_000);
        assert_eq!(h.segment_plain_len(3), 200_000 - 3 * SEGMENT_SIZE);
        assert_eq!(encrypted_len(0, SEGMENT_SIZE), HEADER_LEN + TAG_LEN);
        assert_eq!(segment_count(SEGMENT_SIZE, SEGMENT_SIZE), 1);
        let mut bad = bytes;
        bad[8] = 9;
        assert!(Header::decode(&bad).is_err());
    }

    #[test]
    fn segments_are_bound_to_index_digest_and_last_flag() {
        let ring = Keyring::parse(K1).unwrap();
        let d = Digest::of(b"x");
        let h = Header::new(ring.active().id(), 2 * SEGMENT_SIZE);
        let c = SegmentCipher::new(ring.active().clone(), h, &d);
        let mut seg = vec![7u8; SEGMENT_SIZE as usize];
        c.seal(0, &mut seg).unwrap();
        let sealed = seg.clone();
        c.open(0, &mut seg, &d).unwrap();
        assert_eq!(seg, vec![7u8; SEGMENT_SIZE as usize]);
        // Same bytes presented as another index (which is also the last) fail.
        assert!(c.open(1, &mut sealed.clone(), &d).is_err());
        // Same bytes under another blob's digest fail.
        let other = SegmentCipher::new(ring.active().clone(), h, &Digest::of(b"y"));
        assert!(other.open(0, &mut sealed.clone(), &d).is_err());
    }
}
