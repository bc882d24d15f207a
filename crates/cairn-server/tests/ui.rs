//! The web UI over a real socket, on SQLite and PostgreSQL, as a browser without JavaScript
//! uses it: forms, redirects and the session cookie. The same journey in a real headless
//! Chromium is `browser::reviewer_journey` (when `chromedriver` is installed).
//!
//! People log in with passwords; those whose roles require MFA enrol an authenticator
//! through the account page, and their codes come from the independent TOTP
//! implementation in `cairn_test_utils::totp`.

use cairn_test_utils::{TestServer, totp};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "a long enough password 42";

/// A person with a password and these grants (role, namespace or everywhere).
async fn person(s: &TestServer, name: &str, grants: &[(&str, Option<&str>)]) {
    let body = json!({"username": name, "password": PASSWORD, "kind": "user"});
    let (st, v) = s.call(Method::POST, "/api/v1/users", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    for (role, ns) in grants {
        let mut g = json!({"username": name, "role": role});
        if let Some(ns) = ns {
            // The namespace may exist already (409).
            s.call(Method::POST, "/api/v1/namespaces", Some(json!({"name": ns}))).await;
            g["namespace"] = json!(ns);
        }
        let (st, v) = s.call(Method::POST, "/api/v1/grants", Some(g)).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
}

/// One answer, not followed.
#[derive(Debug)]
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
        self.body[at..at + 64].to_owned()
    }

    /// The text of the element with this id (up to its first tag).
    fn text_of(&self, id: &str) -> Option<String> {
        let at = self.body.find(&format!("id=\"{id}\""))?;
        let open = self.body[at..].find('>')? + at + 1;
        let close = self.body[open..].find('<')? + open;
        Some(self.body[open..close].to_owned())
    }
}

/// A browser without JavaScript: it keeps the session cookie and follows nothing by itself.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
}

impl Browser {
    fn new(s: &TestServer) -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { base: s.url.clone(), http, cookie: None }
    }

    async fn send(&mut self, mut req: reqwest::RequestBuilder) -> Page {
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("cairn_session={c}"));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        for set in headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let value = set.split(';').next().unwrap().strip_prefix("cairn_session=").unwrap();
            self.cookie = if set.contains("Max-Age=0") { None } else { Some(value.to_owned()) };
        }
        // The templates escape `/` in values as `&#x2f;`; read it back for the assertions.
        let body = resp.text().await.unwrap().replace("&#x2f;", "/");
        Page { status, headers, body }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        self.send(req).await
    }

    /// Follows redirects (as `GET`) until a page answers.
    async fn follow(&mut self, mut page: Page) -> Page {
        for _ in 0..5 {
            if page.status != StatusCode::SEE_OTHER {
                return page;
            }
            let to = page.location().to_owned();
            page = self.get(&to).await;
        }
        panic!("too many redirects");
    }

    /// Logs in with the password; when the person's roles require MFA, enrols an
    /// authenticator on the account page (as the server asks) and returns its secret and
    /// recovery codes.
    async fn log_in(&mut self, name: &str) -> Option<(String, Vec<String>)> {
        let page = self.post("/ui/login", &[("username", name), ("password", PASSWORD), ("next", "/ui/models")]).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        if page.location() == "/ui/models" {
            return None;
        }
        assert_eq!(page.location(), "/ui/account?enrol=required", "only enrolment may stand in the way");
        let account = self.get(page.location()).await;
        assert!(account.body.contains("Your role requires a second factor"), "{}", account.body);
        let enrol = self.post("/ui/account/mfa", &[("csrf", &account.csrf())]).await;
        assert_eq!(enrol.status, StatusCode::OK, "{}", enrol.body);
        assert!(enrol.body.contains("<svg id=\"mfa-qr\""), "the enrolment shows a QR code");
        let secret = enrol.text_of("mfa-secret").expect("the secret in text");
        totp::wait_for_fresh_step().await;
        let code = totp::code(&secret, 0);
        let done = self.post("/ui/account/mfa/confirm", &[("csrf", &enrol.csrf()), ("code", &code)]).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        let codes: Vec<String> =
            done.body.split("<li><code>").skip(1).map(|c| c.split('<').next().unwrap().to_owned()).collect();
        assert_eq!(codes.len(), 10, "ten recovery codes, shown once");
        Some((secret, codes))
    }
}

const V1: &str = "/ui/models/risk/fraud/versions/1";

/// A card with markup in it that must never run.
const CARD: &str = "model:\n  name: fraud\n  description: \"Scores card transactions for fraud. <script>alert('card')</script>\"\n  license: apache-2.0\n";

/// Namespace `risk`, model `risk/fraud` (medium risk) with version 1 carrying a card and an
/// evaluation, submitted by the administrator: it waits at the staging gate.
async fn fixture(s: &TestServer) {
    let (st, v) = s.call(Method::POST, "/api/v1/namespaces", Some(json!({"name": "risk"}))).await;
    assert!(st == StatusCode::CREATED || st == StatusCode::CONFLICT, "{v}");
    let model = json!({"name": "risk/fraud", "risk_tier": "medium", "description": "Fraud scores", "tags": {"task": "tabular-classification"}});
    let (st, v) = s.call(Method::POST, "/api/v1/models", Some(model)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let body = json!({"source": "s3://bucket/fraud/1", "code_commit": "0123456789abcdef0123456789abcdef01234567"});
    let (st, v) = s.call(Method::POST, "/api/v1/models/risk/fraud/versions", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let card = json!({"source_name": "card.yaml", "source": CARD});
    let (st, v) = s.call(Method::PUT, "/api/v1/models/risk/fraud/versions/1/card", Some(card)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let suite = json!({"definition": {"test_type": "effectiveness", "metrics": [{"name": "accuracy", "group": "task", "at_least": 0.9}]}});
    let (st, v) = s.call(Method::PUT, "/api/v1/namespaces/risk/eval-suites/acceptance", Some(suite)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let result = json!({"suite": "acceptance", "results": {"accuracy": 0.93}});
    let (st, v) = s.call(Method::POST, "/api/v1/models/risk/fraud/versions/1/evaluations", Some(result)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) =
        s.call(Method::POST, "/api/v1/models/risk/fraud/versions/1/submit", Some(json!({"reason": "ready"}))).await;
    assert_eq!((st, v["stage"].as_str()), (StatusCode::OK, Some("submitted")), "{v}");
}

async fn stage(s: &TestServer) -> String {
    let (_, v) = s.call(Method::GET, "/api/v1/models/risk/fraud/versions/1/lifecycle", None).await;
    v["stage"].as_str().unwrap().to_owned()
}

async fn audit_events(s: &TestServer, query: &str) -> Vec<Value> {
    let (st, v) = s.call(Method::GET, &format!("/api/v1/audit/events?{query}"), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["events"].as_array().unwrap().clone()
}

async fn pages_need_a_login(s: &TestServer) {
    fixture(s).await;
    let mut b = Browser::new(s);
    for path in ["/ui/models", "/ui/models/risk/fraud", V1, "/ui/reviews", "/ui/audit", "/ui/admin", "/ui/account"] {
        let page = b.get(path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        let next = page.location().strip_prefix("/ui/login?next=").expect("to the login page");
        assert_eq!(next.replace("%2F", "/"), path);
    }
    // Forms without a session change nothing.
    let page = b.post(&format!("{V1}/review"), &[("csrf", "x"), ("decision", "approve"), ("role", "mrc")]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location().starts_with("/ui/login"));
    assert_eq!(stage(s).await, "submitted");
    // A session that is not a session is sent to log in again, and its cookie cleared.
    b.cookie = Some("forged".into());
    let page = b.get("/ui/models").await;
    assert_eq!(page.location(), "/ui/login?next=%2Fui%2Fmodels&reason=expired");
    assert_eq!(b.cookie, None);
    let login = b.get("/ui/login?reason=expired").await;
    assert!(login.body.contains("Your session has ended"), "the timeout notice");
    // The root goes to the models.
    assert_eq!(b.get("/ui").await.location(), "/ui/models");
}

async fn logging_in_failures_and_lockouts(s: &TestServer) {
    person(s, "vic", &[("viewer", Some("risk"))]).await;
    let mut b = Browser::new(s);
    let page = b.post("/ui/login", &[("username", "vic"), ("password", "wrong"), ("next", "/ui/models")]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("invalid username or password"), "{}", page.body);
    assert!(page.body.contains("value=\"vic\""), "the name is kept in the form");
    assert_eq!(b.cookie, None);
    let failures = audit_events(s, "action=auth.login&outcome=failure").await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    // A `next` that leaves the UI is ignored.
    let page =
        b.post("/ui/login", &[("username", "vic"), ("password", PASSWORD), ("next", "https://evil.example/")]).await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/ui/models"));
    assert!(b.cookie.is_some());
    // A logged-in person asking for the login page goes on.
    assert_eq!(b.get("/ui/login?next=/ui/reviews").await.location(), "/ui/reviews");
    // Five failures lock the name out; the form says for how long.
    let mut other = Browser::new(s);
    for _ in 0..5 {
        other.post("/ui/login", &[("username", "vic"), ("password", "nope")]).await;
    }
    let page = other.post("/ui/login", &[("username", "vic"), ("password", PASSWORD)]).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.body.contains("Too many failed attempts"), "{}", page.body);
}

async fn a_reviewer_approves_and_the_audit_shows_it(s: &TestServer) {
    fixture(s).await;
    person(s, "rita", &[("mrc", Some("risk")), ("auditor", None)]).await;
    let mut b = Browser::new(s);
    b.log_in("rita").await.expect("a reviewer must enrol");

    // A version waiting in a namespace she does not review stays out of her inbox.
    let (st, _) = s.call(Method::POST, "/api/v1/models", Some(json!({"name": "other/thing"}))).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, _) = s.call(Method::POST, "/api/v1/models/other/thing/versions", Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, v) = s.call(Method::POST, "/api/v1/models/other/thing/versions/1/submit", Some(json!({}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let inbox = b.get("/ui/reviews").await;
    assert_eq!(inbox.status, StatusCode::OK);
    assert!(!inbox.body.contains("other/thing"), "{}", inbox.body);
    assert!(inbox.body.contains("href=\"/ui/models/risk/fraud/versions/1\""), "{}", inbox.body);
    assert!(inbox.body.contains(">staging<"), "the gate it waits at");

    let page = b.get(V1).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // The card is rendered, its markup inert; the metrics chart and lineage are drawn.
    assert!(page.body.contains("id=\"card-body\""));
    assert!(page.body.contains("Scores card transactions for fraud."));
    assert!(!page.body.contains("<script>alert"), "card markup must never reach the page as markup");
    assert!(page.body.contains("class=\"metrics-chart\""));
    assert!(page.body.contains("acceptance / accuracy: 0.930 (passed)"));
    assert!(page.body.contains("class=\"lineage\"") && page.body.contains("code commit"));
    assert!(page.body.contains("id=\"four-eyes\""), "the two-person rule is shown for medium risk");
    assert!(page.body.contains("id=\"review-form\""));
    assert!(page.body.contains("<option value=\"mrc\">mrc</option>"));
    assert!(!page.body.contains("<option value=\"security\">"), "only roles she holds");

    // A form without the session's CSRF token is refused and changes nothing.
    let bad = b
        .post(
            &format!("{V1}/review"),
            &[("csrf", &"0".repeat(64)), ("decision", "approve"), ("role", "mrc"), ("rationale", "ok")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::FORBIDDEN);
    assert!(bad.body.contains("CSRF"), "{}", bad.body);
    assert_eq!(stage(s).await, "submitted");
    // No rationale: the server refuses, the page says why.
    let csrf = page.csrf();
    let none = b
        .post(&format!("{V1}/review"), &[("csrf", &csrf), ("decision", "approve"), ("role", "mrc"), ("rationale", "")])
        .await;
    assert_eq!(none.status, StatusCode::SEE_OTHER);
    let shown = b.follow(none).await;
    assert!(shown.body.contains("id=\"error\""), "{}", shown.body);
    assert_eq!(stage(s).await, "submitted");

    let ok = b
        .post(
            &format!("{V1}/review"),
            &[("csrf", &csrf), ("decision", "approve"), ("role", "mrc"), ("rationale", "Card and metrics reviewed")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let shown = b.follow(ok).await;
    assert!(
        shown.text_of("notice").unwrap().contains("Approved; the version is now approved_staging"),
        "{}",
        shown.body
    );
    assert!(shown.body.contains("Card and metrics reviewed"), "the review is listed");
    assert_eq!(stage(s).await, "approved_staging");
    assert!(!b.get("/ui/reviews").await.body.contains("risk/fraud"), "nothing left in the inbox");

    // The audit page shows the approval, filtered by action.
    let audit = b.get("/ui/audit?action=version.review.approve").await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.body);
    assert!(audit.body.contains("user:rita") && audit.body.contains("version:risk/fraud:1"), "{}", audit.body);
    assert!(audit.body.contains("id=\"chain-status\""));
    let verified = b.post("/ui/audit/verify", &[("csrf", &audit.csrf())]).await;
    assert_eq!(verified.status, StatusCode::OK);
    assert!(verified.text_of("verify-result").unwrap().starts_with("The chain is intact"), "{}", verified.body);
}

async fn a_viewer_cannot_approve(s: &TestServer) {
    fixture(s).await;
    person(s, "vic", &[("viewer", Some("risk"))]).await;
    let mut b = Browser::new(s);
    assert_eq!(b.log_in("vic").await, None, "viewers need no second factor");
    let page = b.get(V1).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("id=\"review-form\""), "no review form for a viewer");
    assert!(!page.body.contains("id=\"lifecycle-form\""), "no lifecycle buttons either");
    assert!(!page.body.contains("id=\"nav-reviews\"") && !page.body.contains("id=\"nav-admin\""));
    // The server refuses anyway, and records the attempt.
    let tried = b
        .post(
            &format!("{V1}/review"),
            &[("csrf", &page.csrf()), ("decision", "approve"), ("role", "mrc"), ("rationale", "me too")],
        )
        .await;
    let shown = b.follow(tried).await;
    assert!(shown.body.contains("id=\"error\""), "{}", shown.body);
    assert_eq!(stage(s).await, "submitted");
    let denied = audit_events(s, "actor=user:vic&outcome=denied").await;
    assert!(denied.iter().any(|e| e["action"] == "version.review"), "{denied:?}");
    // Pages of other roles answer 403 pages, not data.
    for path in ["/ui/admin", "/ui/audit"] {
        let page = b.get(path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(page.body.contains("Not allowed"));
    }
    // A model outside her namespaces does not exist for her.
    let (st, _) = s.call(Method::POST, "/api/v1/models", Some(json!({"name": "secret/thing"}))).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(b.get("/ui/models/secret/thing").await.status, StatusCode::NOT_FOUND);
    assert!(!b.get("/ui/models").await.body.contains("secret/thing"));
}

async fn mfa_is_asked_at_the_next_login(s: &TestServer) {
    person(s, "rita", &[("mrc", Some("risk"))]).await;
    let mut b = Browser::new(s);
    let (secret, recovery) = b.log_in("rita").await.unwrap();
    let page = b.get("/ui/models").await;
    assert_eq!(page.status, StatusCode::OK);
    let old = b.cookie.clone();
    let out = b.post("/ui/logout", &[("csrf", &page.csrf())]).await;
    assert_eq!((out.status, out.location()), (StatusCode::SEE_OTHER, "/ui/login?reason=logged_out"));
    assert_eq!(b.cookie, None);
    // The old session is over on the server too.
    b.cookie = old;
    assert!(b.get("/ui/models").await.location().starts_with("/ui/login"));

    let mut b = Browser::new(s);
    let page = b.post("/ui/login", &[("username", "rita"), ("password", PASSWORD), ("next", "/ui/reviews")]).await;
    assert_eq!(page.location(), "/ui/mfa?next=%2Fui%2Freviews");
    assert_eq!(b.get("/ui/models").await.location(), "/ui/mfa", "nothing else until the code is given");
    let form = b.get("/ui/mfa?next=/ui/reviews").await;
    let wrong = b.post("/ui/mfa", &[("csrf", &form.csrf()), ("code", "000000"), ("next", "/ui/reviews")]).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert!(wrong.body.contains("invalid or already used code"), "{}", wrong.body);
    // The next step's code: the enrolment used this step's.
    let code = totp::code(&secret, 1);
    let ok = b.post("/ui/mfa", &[("csrf", &form.csrf()), ("code", &code), ("next", "/ui/reviews")]).await;
    assert_eq!((ok.status, ok.location()), (StatusCode::SEE_OTHER, "/ui/reviews"), "{}", ok.body);
    assert_eq!(b.get("/ui/reviews").await.status, StatusCode::OK);
    // A login with a second factor at once (here a recovery code) skips the step; a used
    // recovery code does not work twice.
    let mut c = Browser::new(s);
    let page = c.post("/ui/login", &[("username", "rita"), ("password", PASSWORD), ("code", &recovery[0])]).await;
    assert_eq!(page.location(), "/ui/models", "{}", page.body);
    let mut d = Browser::new(s);
    let page = d.post("/ui/login", &[("username", "rita"), ("password", PASSWORD), ("code", &recovery[0])]).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
}

async fn api_keys_are_shown_once(s: &TestServer) {
    person(s, "vic", &[("viewer", None)]).await;
    let mut b = Browser::new(s);
    b.log_in("vic").await;
    let account = b.get("/ui/account").await;
    let created = b
        .post(
            "/ui/account/keys",
            &[("csrf", &account.csrf()), ("name", "ci"), ("scope", "read"), ("expires_in_days", "30")],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let token = created.text_of("new-key-token").expect("the key, once");
    assert!(token.starts_with("cairn_"), "{token}");
    let again = b.get("/ui/account").await;
    assert!(!again.body.contains(&token), "never shown again");
    assert!(again.body.contains(">ci<"));
    let me = reqwest::Client::new().get(format!("{}/api/v1/me", s.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let (_, keys) = s.call(Method::GET, "/api/v1/keys?username=vic", None).await;
    let id = keys["keys"][0]["id"].as_str().unwrap().to_owned();
    let revoked = b.post(&format!("/ui/account/keys/{id}/revoke"), &[("csrf", &again.csrf())]).await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    let me = reqwest::Client::new().get(format!("{}/api/v1/me", s.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
}

async fn administrators_manage_people_grants_and_lockouts(s: &TestServer) {
    person(s, "ada", &[("admin", None)]).await;
    let (st, _) = s.call(Method::POST, "/api/v1/namespaces", Some(json!({"name": "risk"}))).await;
    assert_eq!(st, StatusCode::CREATED);
    let mut b = Browser::new(s);
    b.log_in("ada").await.expect("administrators enrol");
    // Someone gets locked out.
    let mut other = Browser::new(s);
    for _ in 0..5 {
        other.post("/ui/login", &[("username", "mallory"), ("password", "guess")]).await;
    }
    let page = b.get("/ui/admin").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("user:mallory"), "the lockout is listed");
    let csrf = page.csrf();
    let made = b
        .post(
            "/ui/admin/users",
            &[("csrf", &csrf), ("username", "ci-bot"), ("kind", "service"), ("display_name", "CI")],
        )
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER);
    assert!(made.location().contains("notice=Created%20service%20account"), "{}", made.location());
    let granted = b
        .post(
            "/ui/admin/grants",
            &[("csrf", &csrf), ("username", "ci-bot"), ("role", "model_owner"), ("namespace", "risk")],
        )
        .await;
    assert!(granted.location().contains("notice="), "{}", granted.location());
    let (_, grants) = s.call(Method::GET, "/api/v1/grants?username=ci-bot", None).await;
    assert_eq!(grants["grants"][0]["role"], "model_owner", "{grants}");
    let unknown = b.post("/ui/admin/grants", &[("csrf", &csrf), ("username", "nobody"), ("role", "viewer")]).await;
    assert!(unknown.location().contains("error="), "{}", unknown.location());
    let released = b.post("/ui/admin/lockouts/user%3Amallory/release", &[("csrf", &csrf)]).await;
    assert!(released.location().contains("notice="), "{}", released.location());
    let page = b.get("/ui/admin").await;
    assert!(!page.body.contains("user:mallory"), "released");
    assert!(page.body.contains("ci-bot"));
    let disabled = b.post("/ui/admin/users/ci-bot", &[("csrf", &csrf), ("set", "disable")]).await;
    assert!(disabled.location().contains("notice="), "{}", disabled.location());
    let (_, u) = s.call(Method::GET, "/api/v1/users/ci-bot", None).await;
    assert_eq!(u["disabled"], true);
}

async fn pages_are_small_safe_and_searchable(s: &TestServer) {
    fixture(s).await;
    // Version 2 has a file (with a space in its name), so it is signed by the server.
    let data = b"weights of version two".to_vec();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
    let declare = json!({"files": [{"path": "weights/model two.bin", "size": data.len(), "sha256": digest}]});
    let (st, up) = s.call(Method::POST, "/api/v1/models/risk/fraud/uploads", Some(declare)).await;
    assert_eq!(st, StatusCode::CREATED, "{up}");
    let id = up["upload_id"].as_str().unwrap().to_owned();
    let put = reqwest::Client::new()
        .put(format!("{}/api/v1/uploads/{id}/blobs/{digest}/parts/0", s.url))
        .bearer_auth(&s.token)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let (st, v) = s.call(Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(json!({}))).await;
    assert_eq!((st, v["version"].as_i64()), (StatusCode::CREATED, Some(2)), "{v}");
    person(s, "vic", &[("viewer", Some("risk")), ("auditor", None)]).await;
    let mut b = Browser::new(s);
    b.log_in("vic").await;
    // Not deployed yet; then recorded in staging by the deployment tool: the model page shows
    // where it runs, linked to the version.
    assert!(b.get("/ui/models/risk/fraud").await.body.contains("Not deployed anywhere yet."));
    let (st, v) = s.call(Method::PUT, "/api/v1/environments/staging", Some(json!({}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let canary = json!({"model": "risk/fraud", "version": "1", "strategy": "canary", "traffic_percent": 10, "status": "succeeded"});
    let (st, v) = s.call(Method::POST, "/api/v1/environments/staging/deployments", Some(canary)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let page = b.get("/ui/models/risk/fraud").await;
    let table = page
        .body
        .split("<table id=\"deployments\"")
        .nth(1)
        .expect("a deployments table")
        .split("</table>")
        .next()
        .unwrap();
    assert_eq!(table.matches("<tr class=\"deployment\">").count(), 1, "{table}");
    for shown in ["<td>staging</td>", "href=\"/ui/models/risk/fraud/versions/1\"", "canary (10%)", "succeeded"] {
        assert!(table.contains(shown), "{shown} in {table}");
    }
    // The version's evaluation jobs: none, then one queued by hand, as a worker would see it.
    let jobs = |body: &str| {
        let table = body.split("<table id=\"eval-jobs\"").nth(1).expect("an evaluation jobs table");
        table.split("</table>").next().unwrap().to_owned()
    };
    assert!(jobs(&b.get(V1).await.body).contains("No evaluation jobs"));
    let queue = json!({"suite": "acceptance", "priority": 5});
    let (st, v) = s.call(Method::POST, "/api/v1/models/risk/fraud/versions/1/eval-jobs", Some(queue)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let table = jobs(&b.get(V1).await.body);
    assert_eq!(table.matches("<tr class=\"eval-job\">").count(), 1, "{table}");
    for shown in ["<td>acceptance</td>", ">queued</span>", "<td>0 of 3</td>", "none yet", " by user:admin</td>"] {
        assert!(table.contains(shown), "{shown} in {table}");
    }
    assert!(jobs(&b.get("/ui/models/risk/fraud/versions/2").await.body).contains("No evaluation jobs"));
    for path in [
        "/ui/models",
        "/ui/models/risk/fraud",
        V1,
        "/ui/models/risk/fraud/compare?a=1&b=2",
        "/ui/audit",
        "/ui/account",
        "/ui/login",
    ] {
        let page = b.get(path).await;
        let expected = if path == "/ui/login" { StatusCode::SEE_OTHER } else { StatusCode::OK };
        assert_eq!(page.status, expected, "{path}: {}", page.body);
        let h = &page.headers;
        assert!(h["content-security-policy"].to_str().unwrap().starts_with("default-src 'none'; style-src 'self'"));
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["cache-control"], "no-store");
        assert!(page.body.len() < 100 * 1024, "{path}: {} bytes", page.body.len());
        assert!(!page.body.contains("<script>"), "{path}: no inline script");
        if expected == StatusCode::OK {
            assert!(page.body.contains("<main id=\"main\""), "{path}");
            assert!(page.body.contains("<html lang=\"en\">"));
        }
    }
    // Search by text, namespace, tag; a filter that names nothing finds nothing.
    for (query, found) in [
        ("q=fraud", true),
        ("q=FRAUD", true),
        ("namespace=risk&tag=task%3Dtabular-classification", true),
        ("tag=task%3Dnlp", false),
        ("q=%25", false),
    ] {
        let page = b.get(&format!("/ui/models?{query}")).await;
        assert_eq!(page.status, StatusCode::OK, "{query}: {}", page.body);
        assert_eq!(page.body.contains("class=\"model-link\""), found, "{query}");
    }
    let bad = b.get("/ui/models?tag=a%60b").await;
    assert!(bad.body.contains("id=\"error\""), "a bad filter is explained on the page");
    // Files link to their downloads (the session cookie is enough to read them); the
    // server's signature is checked and shown as valid.
    let v2 = b.get("/ui/models/risk/fraud/versions/2").await;
    assert!(v2.body.contains("/files/weights/model%20two.bin\""), "{}", v2.body);
    assert!(
        v2.body.contains("valid, by this server&#x27;s signing key")
            || v2.body.contains("valid, by this server's signing key"),
        "{}",
        v2.body
    );
    // Its artifact scan is shown (a raw .bin is skipped, so nothing is found), with the ML-BOM;
    // version 1 predates any file and was never scanned.
    assert!(v2.body.contains("id=\"scan\"") && v2.body.contains("nothing found"), "{}", v2.body);
    assert!(v2.body.contains("/versions/2/sbom\""), "{}", v2.body);
    assert!(b.get(V1).await.body.contains("Not scanned"));
    let bom = b.get("/api/v1/models/risk/fraud/versions/2/sbom").await;
    assert_eq!(bom.status, StatusCode::OK);
    assert!(bom.body.contains("\"specVersion\":\"1.6\""), "{}", bom.body);
    let file = b.get("/api/v1/models/risk/fraud/versions/2/files/weights/model%20two.bin").await;
    assert_eq!((file.status, file.body.as_bytes()), (StatusCode::OK, data.as_slice()));
    // The comparison shows both versions side by side.
    let cmp = b.get("/ui/models/risk/fraud/compare?a=1&b=2").await;
    assert!(cmp.body.contains("id=\"compare-summary\""));
    // The stylesheet and script are this server's own, cacheable.
    let css = b.get("/ui/static/cairn.css").await;
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
    assert_eq!(css.headers["cache-control"], "public, max-age=3600");
}

cairn_test_utils::both_backends!(
    pages_need_a_login,
    logging_in_failures_and_lockouts,
    a_reviewer_approves_and_the_audit_shows_it,
    a_viewer_cannot_approve,
    mfa_is_asked_at_the_next_login,
    api_keys_are_shown_once,
    administrators_manage_people_grants_and_lockouts,
    pages_are_small_safe_and_searchable,
);

/// The reviewer's journey in a real headless Chromium, driven through WebDriver
/// (`chromedriver`): log in, enrol MFA with the code of the QR code's secret, browse to the
/// model, read its card, approve, see the audit entry; then a viewer finds no way to approve.
/// With `CAIRN_SCREENSHOT_DIR` set, screenshots of the main pages are written there.
mod browser {
    use std::path::PathBuf;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use cairn_test_utils::{Backend, TestServer, totp};
    use fantoccini::{Client, ClientBuilder, Locator};

    use super::{PASSWORD, fixture, person, stage};

    /// `chromedriver`, from `CAIRN_TEST_CHROMEDRIVER` or the usual place; `None` (after saying
    /// so) when it is not installed, which fails under `CAIRN_REQUIRE_ALL_TESTS`.
    fn chromedriver() -> Option<PathBuf> {
        let path = std::env::var_os("CAIRN_TEST_CHROMEDRIVER")
            .map_or_else(|| PathBuf::from("/usr/bin/chromedriver"), PathBuf::from);
        if path.exists() {
            return Some(path);
        }
        assert!(
            !cairn_test_utils::require_all(),
            "CAIRN_REQUIRE_ALL_TESTS is set but chromedriver is not at {} (install Debian's chromium and chromium-driver)",
            path.display()
        );
        eprintln!("SKIPPED browser tests: no chromedriver at {} (set CAIRN_TEST_CHROMEDRIVER)", path.display());
        None
    }

    struct Driver {
        child: tokio::process::Child,
        url: String,
        _profile: tempfile::TempDir,
    }

    async fn start_driver(path: &std::path::Path) -> (Driver, Client) {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let browser = std::env::var("CAIRN_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": browser,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display())],
            }),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "chromedriver did not start a session: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        (Driver { child, url, _profile: profile }, client)
    }

    async fn screenshot(c: &Client, name: &str) {
        if let Some(dir) = std::env::var_os("CAIRN_SCREENSHOT_DIR") {
            let png = c.screenshot().await.expect("screenshot");
            std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).unwrap();
        }
    }

    /// Reads an element's text. A click that submits a form can leave the old page in place for
    /// a moment, so an element found there may go stale before it is read: look it up again.
    async fn text(c: &Client, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let e = c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await.unwrap();
            match e.text().await {
                Ok(t) => return t,
                Err(err) if err.is_stale_element_reference() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(err) => panic!("reading {css}: {err}"),
            }
        }
    }

    /// Waits until the browser has navigated to a URL containing `part`.
    async fn wait_for_url(c: &Client, part: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = c.current_url().await.unwrap();
            if url.as_str().contains(part) {
                return;
            }
            assert!(Instant::now() < deadline, "still at {url}, expected a URL with {part}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn fill(c: &Client, css: &str, value: &str) {
        // Waits for the field: the page a click leads to may still be loading.
        let e = c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    async fn click(c: &Client, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let e = c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await.unwrap();
            match e.click().await {
                Ok(()) => return,
                Err(err) if err.is_stale_element_reference() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(err) => panic!("clicking {css}: {err}"),
            }
        }
    }

    async fn log_in(c: &Client, base: &str, name: &str) {
        c.goto(&format!("{base}/ui/login")).await.unwrap();
        fill(c, "#username", name).await;
        fill(c, "#password", PASSWORD).await;
        click(c, "#login-submit").await;
        // The click returns before the answer: wait for the page it leads to, or a navigation
        // right after would cancel the login.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = c.current_url().await.unwrap();
            if !url.path().ends_with("/ui/login") {
                return;
            }
            assert!(Instant::now() < deadline, "still at {url} after logging in");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reviewer_journey() {
        let Some(driver_path) = chromedriver() else { return };
        let Some(s) = TestServer::start(Backend::Sqlite, "browser_reviewer_journey").await else { return };
        fixture(&s).await;
        person(&s, "rita", &[("mrc", Some("risk")), ("auditor", None)]).await;
        person(&s, "vic", &[("viewer", Some("risk"))]).await;
        let (mut driver, c) = start_driver(&driver_path).await;
        let base = s.url.clone();

        // Log in; the reviewer role requires MFA, so the account page asks for enrolment.
        log_in(&c, &base, "rita").await;
        assert!(text(&c, "[role=alert]").await.contains("requires a second factor"));
        click(&c, "#mfa-enrol").await;
        c.wait().for_element(Locator::Css("#mfa-qr")).await.unwrap();
        screenshot(&c, "mfa-enrolment").await;
        let secret = text(&c, "#mfa-secret").await;
        totp::wait_for_fresh_step().await;
        fill(&c, "#mfa-code", &totp::code(&secret, 0)).await;
        click(&c, "#mfa-confirm").await;
        // The next page may not be there yet: wait for its codes before counting them.
        c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#recovery-codes li")).await.unwrap();
        assert_eq!(c.find_all(Locator::Css("#recovery-codes li")).await.unwrap().len(), 10);

        // Browse to the model and read its card.
        click(&c, "#nav-models").await;
        screenshot(&c, "models").await;
        click(&c, "a.model-link").await;
        assert_eq!(text(&c, "h1").await, "risk/fraud");
        screenshot(&c, "model").await;
        click(&c, "a.version-link").await;
        assert!(text(&c, "#card-body").await.contains("Scores card transactions for fraud."));
        assert!(text(&c, "#four-eyes").await.contains("two different approvers"));
        assert!(c.find(Locator::Css("svg.metrics-chart")).await.is_ok());
        screenshot(&c, "version").await;

        // Approve from the inbox.
        click(&c, "#nav-reviews").await;
        screenshot(&c, "reviews").await;
        click(&c, "a.inbox-link").await;
        fill(&c, "#review-rationale", "Card, metrics and lineage reviewed").await;
        click(&c, "#approve").await;
        assert!(text(&c, "#notice").await.contains("Approved"));
        assert_eq!(stage(&s).await, "approved_staging");

        // The audit entry.
        click(&c, "#nav-audit").await;
        fill(&c, "#a-action", "version.review.approve").await;
        click(&c, "#audit-filter button[type=submit]").await;
        wait_for_url(&c, "action=version.review.approve").await;
        let rows = text(&c, "#audit-events tbody").await;
        assert!(rows.contains("user:rita") && rows.contains("version:risk/fraud:1"), "{rows}");
        screenshot(&c, "audit").await;
        click(&c, "#logout").await;
        assert!(text(&c, "#notice").await.contains("logged out"));

        // A viewer sees the version but no way to approve it.
        log_in(&c, &base, "vic").await;
        c.goto(&format!("{base}/ui/models/risk/fraud/versions/1")).await.unwrap();
        assert!(text(&c, "h1").await.contains("risk/fraud"));
        assert!(c.find(Locator::Css("#review-form")).await.is_err(), "no review form for a viewer");
        assert!(c.find(Locator::Css("#nav-reviews")).await.is_err());

        c.close().await.unwrap();
        let _ = driver.child.kill().await;
        let _ = driver.url;
        s.stop().await;
    }
}
