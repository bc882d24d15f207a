//! A short-lived, in-process cache of API-key lookups.
//!
//! Every authenticated request would otherwise cost a database round trip before the handler
//! runs. Entries live for [`TTL`] at most, so a key revoked or a user disabled on any replica
//! stops working within that time everywhere. Routes that revoke keys or disable accounts
//! (none yet) must also call [`KeyCache::clear`], so that this process stops trusting them
//! at once. The cache is keyed by the SHA-256 of the token (never the token itself)
//! and is bounded: when it is full, it is emptied and refilled by use.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use cairn_store::user::KeyAuth;

/// How long a verified key is trusted without asking the database again.
pub const TTL: Duration = Duration::from_secs(1);

/// The most entries kept at once.
const MAX_ENTRIES: usize = 10_000;

/// Cached key lookups (including "no such key", so a flood of bad keys hits the database
/// at most once per key and second).
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<String, (Instant, Option<KeyAuth>)>>,
}

impl KeyCache {
    /// The cached lookup of `token_hash`, if it is fresh.
    pub fn get(&self, token_hash: &str) -> Option<Option<KeyAuth>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let (at, key) = entries.get(token_hash)?;
        (at.elapsed() < TTL).then(|| key.clone())
    }

    /// Remembers the lookup of `token_hash`.
    pub fn put(&self, token_hash: String, key: Option<KeyAuth>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (at, _)| at.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(token_hash, (Instant::now(), key));
    }

    /// Records in the cached entry that the key was just used, without extending its life.
    pub fn mark_used(&self, token_hash: &str, now_ms: i64) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, Some(key))) = entries.get_mut(token_hash) {
            key.last_used_at = Some(now_ms);
        }
    }

    /// Forgets everything: called after a change to keys or accounts made by this process.
    pub fn clear(&self) {
        self.entries.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> KeyAuth {
        KeyAuth {
            key_id: id.into(),
            token_hash: "h".into(),
            scopes: "read".into(),
            namespaces: String::new(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            bootstrap: false,
            account: cairn_store::user::AccountAuth {
                user_id: "u".into(),
                username: "alice".into(),
                kind: "user".into(),
                disabled: false,
                mfa_enabled: false,
                grants: Vec::new(),
            },
        }
    }

    #[test]
    fn entries_expire_and_clear() {
        let c = KeyCache::default();
        assert!(c.get("a").is_none());
        c.put("a".into(), Some(key("k1")));
        c.put("b".into(), None);
        assert_eq!(c.get("a").unwrap().unwrap().key_id, "k1");
        assert!(c.get("b").unwrap().is_none(), "a negative lookup is cached too");
        c.clear();
        assert!(c.get("a").is_none());
        c.put("a".into(), Some(key("k1")));
        std::thread::sleep(TTL + Duration::from_millis(20));
        assert!(c.get("a").is_none(), "stale entries are not served");
    }

    #[test]
    fn stays_bounded() {
        let c = KeyCache::default();
        for i in 0..(MAX_ENTRIES + 10) {
            c.put(format!("{i}"), None);
        }
        assert!(c.entries.read().unwrap().len() <= MAX_ENTRIES);
    }
}
