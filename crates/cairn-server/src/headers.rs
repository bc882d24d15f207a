//! Security headers on every response: API answers, errors from any layer, the 404 fallback
//! and the health probes.
//!
//! The API serves JSON and files, never pages to render, so the content security policy
//! forbids everything (the web UI under `/ui` gets its own, which allows only this server's
//! stylesheet, script, images and form targets); nothing may frame a response, sniff its type, learn the referring URL
//! or share the browsing context. Responses are not cached unless the handler chose a
//! `Cache-Control` itself (downloads may). No `Server` header names the software.
//!
//! `Strict-Transport-Security` belongs to TLS: [`add_strict_transport_security`] adds it when
//! the server is told TLS is on.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The content security policy of every response.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `Strict-Transport-Security` when TLS is on: two years, subdomains too.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=63072000; includeSubDomains";

static CROSS_ORIGIN_OPENER_POLICY: HeaderName = HeaderName::from_static("cross-origin-opener-policy");
static CROSS_ORIGIN_RESOURCE_POLICY: HeaderName = HeaderName::from_static("cross-origin-resource-policy");

/// Middleware on every response: sets the security headers (and HSTS when `tls_on`).
pub async fn security_headers(tls_on: bool, req: Request, next: Next) -> Response<Body> {
    let ui = crate::ui::is_ui_path(req.uri().path());
    let mut resp = next.run(req).await;
    set_security_headers(resp.headers_mut());
    add_strict_transport_security(resp.headers_mut(), tls_on);
    if ui {
        // Web UI pages load this server's own stylesheet, script and images, and post forms
        // to it; nothing else, as strict as the API otherwise.
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(crate::ui::CONTENT_SECURITY_POLICY));
    }
    resp
}

/// Sets the security headers on a response's headers (replacing what a handler set, except
/// `Cache-Control`), and removes any `Server` header.
pub fn set_security_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(CROSS_ORIGIN_OPENER_POLICY.clone(), HeaderValue::from_static("same-origin"));
    headers.insert(CROSS_ORIGIN_RESOURCE_POLICY.clone(), HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.remove(header::SERVER);
}

/// Adds `Strict-Transport-Security` when `tls_on`; without TLS the header would be ignored by
/// browsers and misleading to operators, so nothing is added.
pub fn add_strict_transport_security(headers: &mut HeaderMap, tls_on: bool) {
    if tls_on {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(STRICT_TRANSPORT_SECURITY));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_is_set_and_the_server_banner_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::SERVER, HeaderValue::from_static("hyper/1.0"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
        set_security_headers(&mut h);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h["cross-origin-opener-policy"], "same-origin");
        assert_eq!(h["cross-origin-resource-policy"], "same-origin");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert!(!h.contains_key(header::SERVER));
        assert!(!h.contains_key(header::STRICT_TRANSPORT_SECURITY));
    }

    #[test]
    fn a_handlers_cache_control_is_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600, immutable"));
        set_security_headers(&mut h);
        assert_eq!(h[header::CACHE_CONTROL], "private, max-age=3600, immutable");
    }

    #[test]
    fn hsts_only_with_tls() {
        let mut h = HeaderMap::new();
        add_strict_transport_security(&mut h, false);
        assert!(!h.contains_key(header::STRICT_TRANSPORT_SECURITY));
        add_strict_transport_security(&mut h, true);
        assert_eq!(h[header::STRICT_TRANSPORT_SECURITY], "max-age=63072000; includeSubDomains");
    }
}
