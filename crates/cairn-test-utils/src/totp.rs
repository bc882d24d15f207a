//! An independent RFC 4226/6238 (HOTP/TOTP, HMAC-SHA-1) implementation, written from the RFCs
//! with the `hmac` and `sha1` crates and checked against their test vectors, so that tests
//! compute authenticator codes without trusting the server's own code.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};

/// RFC 4648 base32 (upper case, no padding) → bytes.
pub fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u64, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = ALPHABET.iter().position(|&a| a == c.to_ascii_uppercase()).expect("base32 character");
        buffer = (buffer << 5) | v as u64;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

/// RFC 4226 HOTP with HMAC-SHA-1.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> String {
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h[19] & 0x0f);
    let bin = (u32::from(h[offset]) & 0x7f) << 24
        | u32::from(h[offset + 1]) << 16
        | u32::from(h[offset + 2]) << 8
        | u32::from(h[offset + 3]);
    format!("{:0width$}", bin % 10u32.pow(digits), width = digits as usize)
}

/// RFC 6238 TOTP: 30-second steps from the epoch.
pub fn totp_at(secret: &[u8], unix_secs: u64, digits: u32) -> String {
    hotp(secret, unix_secs / 30, digits)
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The code of the step `offset` steps away from now.
pub fn code(secret_b32: &str, offset: i64) -> String {
    let t = now_secs().checked_add_signed(offset * 30).unwrap();
    totp_at(&base32_decode(secret_b32), t, 6)
}

/// Waits until at least 12 s are left in the current 30-second step, so that a sequence of
/// requests that relies on "the current step" does not straddle two.
pub async fn wait_for_fresh_step() {
    let into = now_secs() % 30;
    if into > 18 {
        tokio::time::sleep(Duration::from_secs(30 - into)).await;
    }
}

#[cfg(test)]
#[test]
fn independent_totp_matches_rfc_6238_vectors() {
    // RFC 6238 appendix B, SHA-1, 8 digits; secret "12345678901234567890".
    let secret = b"12345678901234567890";
    for (t, expected) in [
        (59u64, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ] {
        assert_eq!(totp_at(secret, t, 8), expected, "T = {t}");
    }
    // RFC 4226 appendix D, 6 digits.
    assert_eq!(hotp(secret, 0, 6), "755224");
    assert_eq!(hotp(secret, 9, 6), "520489");
    assert_eq!(base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"), secret.to_vec());
}
