//! Wire types of login sessions, multi-factor authentication and lockouts.
//!
//! Request types that carry a password or a code print `<redacted>` in their `Debug` output,
//! so that logging a request never leaks a secret.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `POST /api/v1/auth/login`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The account's login name.
    pub username: String,
    /// Its password.
    pub password: String,
    /// A current code of the account's authenticator app (6 digits), to verify the session
    /// at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_code: Option<String>,
    /// One of the account's unused recovery codes, instead of `totp_code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_code: Option<String>,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("totp_code", &self.totp_code.as_ref().map(|_| "<redacted>"))
            .field("recovery_code", &self.recovery_code.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The session a login (or an MFA step-up) opened. The session id itself travels only in the
/// `cairn_session` cookie (`HttpOnly`), never in a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// The account's login name.
    pub username: String,
    /// Send this as `X-CSRF-Token` with every request of this session that changes state
    /// (any method but GET, HEAD and OPTIONS).
    pub csrf_token: String,
    /// The account has a confirmed authenticator (TOTP).
    pub mfa_enrolled: bool,
    /// A second factor was given in this session.
    pub mfa_verified: bool,
    /// The account must use MFA (its roles, or `CAIRN_AUTH_REQUIRE_MFA`): until the session
    /// is verified — after enrolling, if need be — it may only identify itself, manage its
    /// MFA and log out.
    pub mfa_required: bool,
    /// When the session ends at the latest (RFC 3339), however active it is.
    pub expires_at: String,
    /// The session ends after this many seconds without a request.
    pub idle_timeout_secs: u64,
}

/// Body of `POST /api/v1/auth/mfa` (step-up): one of the two codes.
#[derive(Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaStepUp {
    /// A current code of the authenticator app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// An unused recovery code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_code: Option<String>,
}

impl fmt::Debug for MfaStepUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MfaStepUp")
            .field("code", &self.code.as_ref().map(|_| "<redacted>"))
            .field("recovery_code", &self.recovery_code.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A body carrying one MFA code: a current authenticator code, or (where the route says so)
/// an unused recovery code.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaCode {
    /// The code.
    pub code: String,
}

impl fmt::Debug for MfaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MfaCode").field("code", &"<redacted>").finish()
    }
}

/// A TOTP enrolment in progress: add the secret to an authenticator app, then confirm with
/// one of its codes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TotpEnrolment {
    /// The shared secret, base32 (RFC 4648, no padding).
    pub secret: String,
    /// The same as an `otpauth://totp/…` URI (for a QR code).
    pub otpauth_uri: String,
}

impl fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpEnrolment").field("secret", &"<redacted>").finish_non_exhaustive()
    }
}

/// Recovery codes, shown once: each logs in once in place of an authenticator code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecoveryCodes {
    /// The codes.
    pub recovery_codes: Vec<String>,
}

impl fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryCodes").field("count", &self.recovery_codes.len()).finish()
    }
}

/// One login session of the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// The session's id (not its secret: use it to end the session).
    pub id: String,
    /// Opened at.
    pub created_at: String,
    /// Last request at (refreshed at most every 30 seconds).
    pub last_seen_at: String,
    /// Ends at the latest at.
    pub expires_at: String,
    /// Where it was opened from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// The client that opened it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// A second factor was given in it.
    pub mfa_verified: bool,
    /// It is the session of this request.
    pub current: bool,
}

/// The caller's open sessions, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    /// The sessions.
    pub sessions: Vec<SessionInfo>,
}

/// How many sessions were ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokedSessions {
    /// The number.
    pub revoked: u64,
}

/// A subject (`user:<name>` or `ip:<address>`) locked out after failed logins or codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Lockout {
    /// `user:<name>` (whether or not the account exists) or `ip:<address>`.
    pub subject: String,
    /// Failed attempts counted.
    pub failures: i64,
    /// The last failure.
    pub last_failure_at: String,
    /// Logins are refused until.
    pub locked_until: String,
}

/// Active lockouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LockoutList {
    /// The lockouts.
    pub lockouts: Vec<Lockout>,
}
