//! Logging in with a password: `POST /api/v1/auth/login` answers with a session cookie
//! (`cairn_session`) and a CSRF token. The cookie is `Secure`, so it is sent back by hand
//! (the server may be plain HTTP on the loopback); the CSRF token goes with every request
//! of the session client. A session client is meant for a few calls only — typically to
//! create an API key and log out again.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::{Client, ClientError, SessionCookie};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "cairn_session";

/// What the server says about a new (or stepped-up) login session.
#[derive(Debug, Clone, Deserialize)]
pub struct PasswordLogin {
    /// The account.
    pub username: String,
    /// The CSRF token of the session (sent as `X-CSRF-Token`).
    #[serde(default)]
    pub csrf_token: String,
    /// The account has a TOTP authenticator.
    #[serde(default)]
    pub mfa_enrolled: bool,
    /// The second factor was given in this session.
    #[serde(default)]
    pub mfa_verified: bool,
    /// The account must use MFA.
    #[serde(default)]
    pub mfa_required: bool,
    /// When the session ends at the latest.
    #[serde(default)]
    pub expires_at: String,
    /// Idle timeout of the session (s).
    #[serde(default)]
    pub idle_timeout_secs: u64,
}

impl PasswordLogin {
    /// Whether a TOTP code is still needed before the session may do anything but enrol.
    pub fn needs_code(&self) -> bool {
        self.mfa_enrolled && !self.mfa_verified
    }
}

#[derive(Serialize)]
struct LoginBody<'a> {
    username: &'a str,
    password: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    totp_code: Option<&'a str>,
}

#[derive(Serialize)]
struct CodeBody<'a> {
    code: &'a str,
}

/// The value of the `cairn_session` cookie the response sets, if any.
fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers().get_all(reqwest::header::SET_COOKIE).iter().find_map(|v| {
        let text = v.to_str().ok()?;
        let (pair, _) = text.split_once(';').unwrap_or((text, ""));
        let (name, value) = pair.split_once('=')?;
        (name.trim() == SESSION_COOKIE && !value.trim().is_empty()).then(|| value.trim().to_owned())
    })
}

impl Client {
    /// Logs in with a password (and a TOTP code, if given): returns a client that uses the
    /// new session, and what the server said about it. `401` for bad credentials, `429`
    /// (code `locked`) while the account or address is locked out.
    pub async fn login_password(
        &self,
        username: &str,
        password: &str,
        totp_code: Option<&str>,
    ) -> Result<(Client, PasswordLogin), ClientError> {
        let body = LoginBody { username, password, totp_code };
        let resp = self.http.post(format!("{}/api/v1/auth/login", self.base)).json(&body).send().await?;
        self.session_answer(resp).await
    }

    /// Gives the TOTP code for this session (`POST /api/v1/auth/mfa`): the server verifies
    /// it and issues a new session id; returns the client for the new session.
    pub async fn verify_mfa(&self, code: &str) -> Result<(Client, PasswordLogin), ClientError> {
        let req = self.authorised(self.http.post(format!("{}/api/v1/auth/mfa", self.base))).json(&CodeBody { code });
        let resp = req.send().await?;
        self.session_answer(resp).await
    }

    /// Ends this client's login session (`POST /api/v1/auth/logout`).
    pub async fn logout_session(&self) -> Result<(), ClientError> {
        self.send::<(), (), serde_json::Value>(Method::POST, "/api/v1/auth/logout", None, None).await?;
        Ok(())
    }

    /// `POST /api/v1/me/mfa/totp`: starts TOTP enrolment; the answer holds the secret.
    pub async fn begin_totp_enrolment(&self) -> Result<cairn_api_types::TotpEnrolment, ClientError> {
        self.send::<(), (), _>(Method::POST, "/api/v1/me/mfa/totp", None, None).await?.ok_or_else(crate::empty)
    }

    /// `POST /api/v1/me/mfa/totp/confirm`: turns TOTP on with a first code; the answer holds
    /// the recovery codes, shown once.
    pub async fn confirm_totp(&self, code: &str) -> Result<cairn_api_types::RecoveryCodes, ClientError> {
        self.write(Method::POST, "/api/v1/me/mfa/totp/confirm", &cairn_api_types::MfaCode { code: code.to_owned() })
            .await
    }

    async fn session_answer(&self, resp: reqwest::Response) -> Result<(Client, PasswordLogin), ClientError> {
        let cookie = session_cookie(&resp);
        let resp = self.check(resp).await?;
        let info: PasswordLogin = resp.json().await?;
        let Some(cookie) = cookie else {
            return Err(ClientError::Protocol("the server accepted the login but set no session cookie".into()));
        };
        let mut client = self.clone();
        client.token = None;
        client.session = Some(SessionCookie { cookie, csrf_token: info.csrf_token.clone() });
        Ok((client, info))
    }
}
