//! TOTP secrets, replay protection and recovery codes.
