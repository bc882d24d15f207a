//! The UI's templates, stylesheet and script, embedded in the binary, and the functions that
//! render them. Templates auto-escape HTML; the only unescaped HTML a page carries is what
//! this crate produced itself (SVG charts) or sanitised with `ammonia` (model cards).

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::{AutoEscape, Environment, Value};

use crate::error::ApiError;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/ui/base.html")),
    ("macros.html", include_str!("../../templates/ui/macros.html")),
    ("login.html", include_str!("../../templates/ui/login.html")),
    ("mfa.html", include_str!("../../templates/ui/mfa.html")),
    ("account.html", include_str!("../../templates/ui/account.html")),
    ("models.html", include_str!("../../templates/ui/models.html")),
    ("model.html", include_str!("../../templates/ui/model.html")),
    ("version.html", include_str!("../../templates/ui/version.html")),
    ("compare.html", include_str!("../../templates/ui/compare.html")),
    ("reviews.html", include_str!("../../templates/ui/reviews.html")),
    ("audit.html", include_str!("../../templates/ui/audit.html")),
    ("admin.html", include_str!("../../templates/ui/admin.html")),
    ("error.html", include_str!("../../templates/ui/error.html")),
];

const STYLESHEET: &str = include_str!("../../templates/ui/cairn.css");
const SCRIPT: &str = include_str!("../../templates/ui/cairn.js");

/// Largest amount of template work one page may do (minijinja fuel): far above any real
/// page, low enough that a runaway loop ends.
const FUEL: u64 = 5_000_000;

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_fuel(Some(FUEL));
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env.add_filter("bytes", human_bytes);
    env.add_filter("short", short);
    env.add_filter("when", when);
    env.add_filter("pct", pct);
    env.add_filter("truncate", truncate);
    env.add_filter("path_encode", path_encode);
    for (name, source) in TEMPLATES {
        env.add_template(name, source).expect("the UI templates are valid");
    }
    env
});

/// `1536` → `1.5 KiB`.
fn human_bytes(n: Value) -> String {
    let n = u64::try_from(n).unwrap_or(0);
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// The first 12 characters of a digest (the whole value stays in the `title`).
fn short(s: String) -> String {
    s.chars().take(12).collect()
}

/// `2026-11-29T18:45:12.123Z` → `2026-11-29 18:45:12`.
fn when(s: String) -> String {
    let s = s.replacen('T', " ", 1);
    let cut = s.find('.').or_else(|| s.find('Z')).unwrap_or(s.len());
    s[..cut].to_owned()
}

/// At most `n` characters, with `…` when cut.
fn truncate(s: String, n: usize) -> String {
    if s.chars().count() <= n { s } else { s.chars().take(n).collect::<String>() + "…" }
}

/// Percent-encodes each segment of a file path, keeping the slashes between them.
fn path_encode(s: String) -> String {
    s.split('/').map(super::urlencode).collect::<Vec<_>>().join("/")
}

/// `0.5` → `50%`.
fn pct(v: Value) -> String {
    f64::try_from(v).map(|f| format!("{:.0}%", f * 100.0)).unwrap_or_default()
}

/// Renders template `name` with `ctx` as an HTML page with `status`.
pub fn render_status(status: StatusCode, name: &str, ctx: Value) -> Response {
    let html = ENV.get_template(name).and_then(|t| t.render(ctx));
    match html {
        Ok(body) => {
            let mut resp = (status, body).into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            resp
        }
        Err(e) => {
            tracing::error!(template = name, error = %e, "a UI template failed to render");
            let mut resp =
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error: this page could not be rendered").into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            resp
        }
    }
}

/// Renders template `name` with `ctx` as a `200` HTML page.
pub fn render(name: &str, ctx: Value) -> Response {
    render_status(StatusCode::OK, name, ctx)
}

/// The error page for `e`, with its status.
pub fn error_page(e: &ApiError) -> Response {
    let title = match e.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::CONFLICT => "Not possible now",
        StatusCode::TOO_MANY_REQUESTS => "Too many requests",
        s if s.is_server_error() => "Something went wrong",
        _ => "Cannot do that",
    };
    render_status(
        e.status,
        "error.html",
        minijinja::context! { title => title, status => e.status.as_u16(), code => e.code, message => e.message },
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    resp
}

/// `GET /ui/static/cairn.css`.
pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

/// `GET /ui/static/cairn.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for (name, _) in TEMPLATES {
            assert!(ENV.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn filters_format_for_people() {
        assert_eq!(human_bytes(Value::from(512)), "512 B");
        assert_eq!(human_bytes(Value::from(1536)), "1.5 KiB");
        assert_eq!(human_bytes(Value::from(5 * 1024 * 1024 * 1024_u64)), "5.0 GiB");
        assert_eq!(short("0123456789abcdef".into()), "0123456789ab");
        assert_eq!(when("2026-11-29T18:45:12.123Z".into()), "2026-11-29 18:45:12");
        assert_eq!(when("2026-11-29T18:45:12Z".into()), "2026-11-29 18:45:12");
        assert_eq!(pct(Value::from(0.5)), "50%");
        assert_eq!(truncate("abcdef".into(), 3), "abc…");
        assert_eq!(truncate("abc".into(), 3), "abc");
        assert_eq!(path_encode("a b/c#d/e.bin".into()), "a%20b/c%23d/e.bin");
    }

    #[test]
    fn markup_in_values_is_escaped() {
        let page = ENV
            .get_template("error.html")
            .unwrap()
            .render(minijinja::context! { title => "t", status => 400, code => "c", message => "<script>x</script>" })
            .unwrap();
        assert!(page.contains("&lt;script&gt;x&lt;&#x2f;script&gt;"), "{page}");
        assert!(!page.contains("<script>x"));
    }
}
