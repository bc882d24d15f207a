//! HTTPS for `cairn serve`: rustls on the aws-lc-rs provider (the one object_store already
//! brings), TLS 1.3 and 1.2 with AEAD suites only, HTTP/2 and HTTP/1.1 by ALPN.
//!
//! The certificate is reloaded without a restart and without dropping connections: on
//! `SIGHUP`, and when the files change (checked every `tls_reload_secs`). New handshakes
//! use the new certificate; connections already open keep theirs. A reload that fails (a
//! half-written file, a key that does not match) is logged and the old certificate stays.
//!
//! With `tls_redirect_listen`, a second listener answers every plain-HTTP request with a
//! permanent redirect to the same path over HTTPS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Reads the certificate chain and key into a server configuration.
pub fn server_config(cert_file: &Path, key_file: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let certs =
        CertificateDer::pem_file_iter(cert_file).and_then(|it| it.collect::<Result<Vec<_>, _>>()).map_err(|e| {
            anyhow::anyhow!(
                "tls_cert_file (CAIRN_TLS_CERT_FILE) {}: not a PEM certificate chain: {e}",
                cert_file.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!("tls_cert_file (CAIRN_TLS_CERT_FILE) {}: holds no certificate", cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        anyhow::anyhow!("tls_key_file (CAIRN_TLS_KEY_FILE) {}: not a PEM private key: {e}", key_file.display())
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| anyhow::anyhow!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            anyhow::anyhow!(
                "tls_cert_file and tls_key_file ({}, {}) do not make a usable certificate: {e}",
                cert_file.display(),
                key_file.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Warns when the private key can be read by other users.
#[cfg(unix)]
pub fn warn_if_key_readable(key_file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(key_file)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %key_file.display(), "the TLS key file can be read by other users: chmod 600 it");
    }
}

#[cfg(not(unix))]
pub fn warn_if_key_readable(_key_file: &Path) {}

/// The certificate files and what they looked like when last loaded.
struct Watched {
    cert: PathBuf,
    key: PathBuf,
    seen: Option<(Stamp, Stamp)>,
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &Path) -> Stamp {
    std::fs::metadata(p).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

impl Watched {
    fn changed(&mut self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        let changed = self.seen.as_ref() != Some(&now);
        self.seen = Some(now);
        changed
    }
}

/// Reloads the certificate on `SIGHUP` and when its files change, until the task is aborted.
pub async fn reload_forever(config: RustlsConfig, cert: PathBuf, key: PathBuf, every: Duration) {
    let mut watched = Watched { cert, key, seen: None };
    watched.changed();
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(if every.is_zero() { Duration::from_secs(3600) } else { every });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        let forced = tokio::select! {
            () = hangup => true,
            _ = tick.tick() => false,
        };
        if !forced && (every.is_zero() || !watched.changed()) {
            continue;
        }
        if forced {
            watched.changed();
        }
        let (cert, key) = (watched.cert.clone(), watched.key.clone());
        match tokio::task::spawn_blocking(move || server_config(&cert, &key)).await {
            Ok(Ok(c)) => {
                config.reload_from_config(Arc::new(c));
                tracing::info!(
                    trigger = if forced { "SIGHUP" } else { "file change" },
                    "reloaded the TLS certificate; new connections use it"
                );
            }
            Ok(Err(e)) => tracing::error!(error = %e, "could not reload the TLS certificate; keeping the current one"),
            Err(e) => tracing::error!(error = %e, "could not reload the TLS certificate; keeping the current one"),
        }
    }
}

/// The plain-HTTP listener's application: every request is sent to HTTPS on `https_port`.
pub fn redirect_router(https_port: u16) -> Router {
    Router::new().fallback(move |req: Request<Body>| async move { redirect(&req, https_port) })
}

fn redirect(req: &Request<Body>, https_port: u16) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(host_without_port);
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "this address only redirects to HTTPS; the request has no Host header")
            .into_response();
    };
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    match HeaderValue::from_str(&format!("https://{host}{port}{path}")) {
        Ok(location) => {
            let mut r = StatusCode::PERMANENT_REDIRECT.into_response();
            r.headers_mut().insert(header::LOCATION, location);
            crate::headers::set_security_headers(r.headers_mut());
            r
        }
        Err(_) => (StatusCode::BAD_REQUEST, "invalid Host header").into_response(),
    }
}

/// `example.org:80` → `example.org`, `[::1]:80` → `[::1]`.
fn host_without_port(h: &str) -> &str {
    if h.starts_with('[') {
        return h.find(']').map_or(h, |end| &h[..=end]);
    }
    h.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(h, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_host_path_and_query_and_use_the_https_port() {
        let req = |host: Option<&str>, uri: &str| {
            let mut b = Request::builder().uri(uri);
            if let Some(h) = host {
                b = b.header(header::HOST, h);
            }
            b.body(Body::empty()).unwrap()
        };
        let r = redirect(&req(Some("cairn.example:80"), "/ui/models?q=x"), 8443);
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "https://cairn.example:8443/ui/models?q=x");
        let r = redirect(&req(Some("[::1]:8080"), "/"), 443);
        assert_eq!(r.headers()[header::LOCATION], "https://[::1]/");
        assert_eq!(redirect(&req(None, "/"), 443).status(), StatusCode::BAD_REQUEST);
    }
}
