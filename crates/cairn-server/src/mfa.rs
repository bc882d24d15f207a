//! Second factors: TOTP (RFC 6238 — HMAC-SHA-1, 6 digits, 30-second steps, one step of
//! clock skew either way) through `totp-rs`, and single-use recovery codes.
//!
//! A TOTP code is accepted once: the time step it matched must be later than the last one
//! accepted for the account, which the database updates atomically, so a code seen by an
//! eavesdropper (or replayed to another replica) is worthless. Recovery codes carry 80 bits
//! of randomness and are stored as SHA-256 hashes, each marked used on first use.

use base64::Engine;
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::app::AppState;
use crate::error::ApiError;

/// The issuer shown in authenticator apps.
pub const ISSUER: &str = "Cairn";

/// How many recovery codes an account gets.
pub const RECOVERY_CODE_COUNT: usize = 10;

/// Characters of a recovery code (16 of base32: 80 bits).
const RECOVERY_CODE_CHARS: usize = 16;

/// A new random 160-bit TOTP secret, base32 (RFC 4648, no padding).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::fill(&mut bytes);
    Secret::new_stack(bytes).to_base32()
}

fn totp(secret_base32: &str, username: &str) -> Result<Totp, ApiError> {
    let secret = Secret::try_from_base32(secret_base32).map_err(|_| internal("a stored TOTP secret is not base32"))?;
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret)
        .with_issuer(Some(ISSUER))
        .with_account_name(username)
        .build()
        .map_err(|e| internal(&format!("cannot set up TOTP: {e}")))
}

fn internal(why: &str) -> ApiError {
    tracing::error!(reason = why, "MFA failure");
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; the server log has details under this request's id",
    )
}

/// The `otpauth://totp/Cairn:<user>?secret=…&issuer=Cairn` URI of a secret (for a QR code).
pub fn otpauth_uri(secret_base32: &str, username: &str) -> Result<String, ApiError> {
    totp(secret_base32, username)?.to_url().map_err(|e| internal(&format!("cannot build the otpauth URI: {e}")))
}

/// The time step (30-second window since the epoch) that `code` is valid for, within one
/// step of `unix_secs`, if any.
pub fn matching_step(secret_base32: &str, code: &str, unix_secs: u64) -> Result<Option<i64>, ApiError> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    // `check` compares in constant time and answers the step that matched.
    let step = totp(secret_base32, "x")?.check(code, unix_secs);
    Ok(step.and_then(|s| i64::try_from(s).ok()))
}

/// Whether `code` has the shape of an authenticator code (six digits) rather than a
/// recovery code.
pub fn is_totp_code(code: &str) -> bool {
    let code = code.trim();
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

/// New recovery codes (`xxxx-xxxx-xxxx-xxxx`, lower-case base32) and their stored hashes.
pub fn new_recovery_codes() -> (Vec<String>, Vec<String>) {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut codes = Vec::with_capacity(RECOVERY_CODE_COUNT);
    for _ in 0..RECOVERY_CODE_COUNT {
        let mut bytes = [0u8; RECOVERY_CODE_CHARS];
        rand::fill(&mut bytes);
        let chars: String = bytes.iter().map(|b| char::from(ALPHABET[usize::from(b & 31)])).collect();
        let groups: Vec<&str> = (0..RECOVERY_CODE_CHARS / 4).map(|i| &chars[i * 4..i * 4 + 4]).collect();
        codes.push(groups.join("-"));
    }
    let hashes = codes.iter().map(|c| hash_recovery_code(c)).collect();
    (codes, hashes)
}

/// The stored form of a recovery code: SHA-256 (hex) of the code without separators, in
/// lower case (so `ABCD EFGH…` and `abcd-efgh-…` are the same code).
pub fn hash_recovery_code(code: &str) -> String {
    let normal: String =
        code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).take(64).collect();
    hex::encode(Sha256::digest(normal.as_bytes()))
}

/// How a second factor was given.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Factor<'a> {
    /// An authenticator code.
    Totp(&'a str),
    /// A recovery code.
    Recovery(&'a str),
}

impl std::fmt::Debug for Factor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.method())
    }
}

impl<'a> Factor<'a> {
    /// From the two optional fields of a request: `None` when both are absent or empty,
    /// an error when both are given.
    pub fn from_fields(totp_code: Option<&'a str>, recovery_code: Option<&'a str>) -> Result<Option<Self>, ApiError> {
        let totp_code = totp_code.map(str::trim).filter(|c| !c.is_empty());
        let recovery_code = recovery_code.map(str::trim).filter(|c| !c.is_empty());
        match (totp_code, recovery_code) {
            (Some(_), Some(_)) => {
                Err(ApiError::invalid("give either an authenticator code or a recovery code, not both"))
            }
            (Some(c), None) => Ok(Some(Self::Totp(c))),
            (None, Some(c)) => Ok(Some(Self::Recovery(c))),
            (None, None) => Ok(None),
        }
    }

    /// One field that may hold either kind: six digits are an authenticator code.
    pub fn from_code(code: &'a str) -> Self {
        if is_totp_code(code) { Self::Totp(code.trim()) } else { Self::Recovery(code.trim()) }
    }

    /// The name recorded in audit events (never the code).
    pub fn method(&self) -> &'static str {
        match self {
            Self::Totp(_) => "totp",
            Self::Recovery(_) => "recovery_code",
        }
    }
}

/// Checks a second factor of the account `user_id` and uses it up: an authenticator code
/// must match the confirmed secret and a time step later than any accepted before; a
/// recovery code must be unused. `false` for anything else (failures are counted by the
/// caller).
pub async fn verify_factor(state: &AppState, user_id: &str, factor: Factor<'_>) -> Result<bool, ApiError> {
    match factor {
        Factor::Totp(code) => {
            let mfa = state.store.mfa_state(user_id).await?;
            let (Some(secret), Some(_)) = (mfa.totp_secret.as_deref(), mfa.totp_enabled_at) else {
                return Ok(false);
            };
            let Some(step) = matching_step(secret, code, unix_secs(state))? else {
                return Ok(false);
            };
            Ok(state.store.claim_totp_step(user_id, step).await?)
        }
        Factor::Recovery(code) => {
            if code.len() > 128 {
                return Ok(false);
            }
            Ok(state.store.use_recovery_code(user_id, &hash_recovery_code(code)).await?)
        }
    }
}

/// Now, in seconds since the epoch.
pub fn unix_secs(state: &AppState) -> u64 {
    u64::try_from(state.now_ms() / 1000).unwrap_or(0)
}

/// A random opaque token of 256 bits, base64url (43 characters).
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_within_one_step() {
        let secret = new_secret();
        assert_eq!(secret.len(), 32, "160 bits in base32");
        let t = totp(&secret, "alice").unwrap();
        let now = 1_900_000_000u64;
        let step = i64::try_from(now / 30).unwrap();
        for (offset, expected) in
            [(-60i64, None), (-30, Some(step - 1)), (0, Some(step)), (30, Some(step + 1)), (60, None)]
        {
            let code = t.generate(now.checked_add_signed(offset).unwrap()).to_string();
            let got = matching_step(&secret, &code, now).unwrap();
            // A code of another step may collide by chance (1 in 10^6); only a miss is an error.
            if expected.is_some() {
                assert_eq!(got, expected, "offset {offset}");
            }
        }
        assert_eq!(matching_step(&secret, "12345", now).unwrap(), None);
        assert_eq!(matching_step(&secret, "abcdef", now).unwrap(), None);
    }

    #[test]
    fn otpauth_uri_names_issuer_and_account() {
        let secret = new_secret();
        let uri = otpauth_uri(&secret, "alice").unwrap();
        assert!(uri.starts_with("otpauth://totp/Cairn:alice?"), "{uri}");
        assert!(uri.contains(&format!("secret={secret}")), "{uri}");
        assert!(uri.contains("issuer=Cairn"), "{uri}");
    }

    #[test]
    fn recovery_codes_are_random_and_normalised() {
        let (codes, hashes) = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
        assert_eq!(hashes.len(), RECOVERY_CODE_COUNT);
        let unique: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), RECOVERY_CODE_COUNT);
        let c = &codes[0];
        assert_eq!(c.len(), 19);
        assert_eq!(hash_recovery_code(&c.to_uppercase().replace('-', " ")), hashes[0]);
        assert!(!is_totp_code(c));
        assert!(is_totp_code(" 123456 "));
        assert_eq!(Factor::from_code("123456"), Factor::Totp("123456"));
        assert!(Factor::from_fields(Some("1"), Some("2")).is_err());
        assert_eq!(Factor::from_fields(Some(""), None).unwrap(), None);
    }
}
