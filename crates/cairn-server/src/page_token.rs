//! Page tokens: opaque, signed cursors.
//!
//! A token is `base64url(json(cursor)) "." base64url(hmac)`, where the HMAC-SHA256 covers
//! the listing it belongs to (route, sort, filter) and the cursor. A tampered token, or one
//! reused with another filter or sort, is refused with `400 invalid_page_token`. The key is
//! kept in the database so that every replica accepts every other replica's tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cairn_store::Cursor;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::ApiError;

/// Signs and verifies page tokens.
#[derive(Clone)]
pub struct PageTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens(<key>)")
    }
}

impl PageTokens {
    /// Uses `key` (at least 32 bytes).
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    fn mac(&self, listing: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(listing.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    /// Encodes the cursor of `listing`.
    pub fn encode(&self, listing: &str, cursor: &Cursor) -> String {
        let payload = serde_json::to_vec(cursor).unwrap_or_default();
        let tag = self.mac(listing, &payload).finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(tag))
    }

    /// Decodes a token of `listing`, refusing anything not signed for it.
    pub fn decode(&self, listing: &str, token: &str) -> Result<Cursor, ApiError> {
        let bad = || {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_page_token",
                "page_token is not valid for this listing; start again without page_token",
            )
        };
        if token.len() > 2048 {
            return Err(bad());
        }
        let (payload, tag) = token.split_once('.').ok_or_else(bad)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad())?;
        self.mac(listing, &payload).verify_slice(&tag).map_err(|_| bad())?;
        serde_json::from_slice(&payload).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::CursorKey;

    #[test]
    fn round_trips_and_refuses_tampering() {
        let t = PageTokens::new(vec![7; 32]);
        let c = Cursor { key: CursorKey::Text("team/a".into()), id: 42 };
        let tok = t.encode("models|name", &c);
        assert_eq!(t.decode("models|name", &tok).unwrap(), c);
        assert!(t.decode("models|created_at", &tok).is_err());
        let forged = Cursor { key: CursorKey::Text("team/a".into()), id: 1 };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let sig = tok.split_once('.').unwrap().1;
        assert!(t.decode("models|name", &format!("{payload}.{sig}")).is_err());
        assert!(t.decode("models|name", "garbage").is_err());
        assert!(PageTokens::new(vec![8; 32]).decode("models|name", &tok).is_err());
    }
}
