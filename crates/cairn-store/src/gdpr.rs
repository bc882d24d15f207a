//! Data-subject requests under the GDPR (docs/PRIVACY.md): access and portability (one
//! machine-readable export of everything held about a person), rectification, and erasure.
//!
//! Every request is kept in `gdpr_requests` with its status and audited (`gdpr.export`,
//! `gdpr.rectify`, `gdpr.erase`) in the transaction that fulfils it.
//!
//! Erasure deletes the account with its keys, sessions, grants and lockout counters, and
//! pseudonymises what must stay: authorship columns (`created_by`, `updated_by`) and the
//! audit events naming the person. Audit details enter the hash chain only through a salted
//! digest (docs/AUDIT.md), so an event's details can be rewritten and its salt dropped while
//! the chain — time, action, outcome and that digest — still verifies; the `gdpr.erase` event
//! lists the events so treated, and the verifier reports any other event without a salt as an
//! unrecorded erasure. JSON states are parsed and walked: only whole string values equal to
//! one of the person's names are replaced, never substrings.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};

use crate::db::Conn;
use crate::lockout::AuthFailure;
use crate::user::{ApiKey, User, load_grants, other_enabled_admins};
use crate::{AuditContext, Store, StoreError, audit, lockout, params};

/// The format name of a personal-data export.
pub const EXPORT_FORMAT: &str = "cairn.personal-data/v1";

/// What a data subject asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// A copy of their data (Art. 15).
    Access,
    /// Their data in a machine-readable form, to take elsewhere (Art. 20).
    Portability,
    /// Correction of their account details (Art. 16).
    Rectification,
    /// Erasure (Art. 17).
    Erasure,
}

impl RequestKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Portability => "portability",
            Self::Rectification => "rectification",
            Self::Erasure => "erasure",
        }
    }
}

/// A data-subject request as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct GdprRequest {
    /// Id (UUID).
    pub id: String,
    /// `access`, `portability`, `rectification` or `erasure`.
    pub kind: String,
    /// The person's login name; after an erasure, the pseudonym `erased:<user id>`.
    pub subject: String,
    /// The person's account id.
    pub subject_id: String,
    /// `open`, `completed` or `rejected`.
    pub status: String,
    /// Who made the request through Cairn (`user:admin`).
    pub requested_by: String,
    /// When (ms).
    pub requested_at: i64,
    /// When it was fulfilled or refused (ms).
    pub completed_at: Option<i64>,
    /// What was done, or why it was refused.
    pub note: String,
}

/// One field of personal data Cairn holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PersonalDataField {
    /// What it is.
    pub field: &'static str,
    /// Where: `table.column`.
    pub location: &'static str,
    /// The category of data.
    pub category: &'static str,
    /// Why it may be processed (GDPR Art. 6).
    pub legal_basis: &'static str,
    /// How long it is kept.
    pub retention: &'static str,
}

const CONTRACT: &str = "contract / legitimate interest: operating the account (Art. 6(1)(b), (f))";
const SECURITY: &str = "legitimate interest: securing the service (Art. 6(1)(f))";
const OBLIGATION: &str = "legal obligation and legitimate interest: accountability of changes (Art. 6(1)(c), (f))";
const UNTIL_ERASED: &str = "until the account is deleted or erased";

const INVENTORY: &[PersonalDataField] = &[
    PersonalDataField {
        field: "login name",
        location: "users.username",
        category: "identifier",
        legal_basis: CONTRACT,
        retention: UNTIL_ERASED,
    },
    PersonalDataField {
        field: "display name",
        location: "users.display_name",
        category: "identity",
        legal_basis: CONTRACT,
        retention: UNTIL_ERASED,
    },
    PersonalDataField {
        field: "email address",
        location: "users.email",
        category: "contact",
        legal_basis: CONTRACT,
        retention: UNTIL_ERASED,
    },
    PersonalDataField {
        field: "password hash (argon2id; never exported)",
        location: "users.password_hash",
        category: "credential",
        legal_basis: SECURITY,
        retention: UNTIL_ERASED,
    },
    PersonalDataField {
        field: "TOTP secret (never exported)",
        location: "users.totp_secret, users.totp_pending_secret, users.totp_last_step",
        category: "credential",
        legal_basis: SECURITY,
        retention: UNTIL_ERASED,
    },
    PersonalDataField {
        field: "MFA recovery codes (hashed; never exported)",
        location: "recovery_codes.code_hash",
        category: "credential",
        legal_basis: SECURITY,
        retention: UNTIL_ERASED,
    },
    PersonalDataField {
        field: "external identity",
        location: "users.external_issuer, users.external_subject",
        category: "identifier",
        legal_basis: CONTRACT,
        retention: UNTIL_ERASED,
    },
    PersonalDataField {
        field: "API key names and metadata",
        location: "api_keys.name, api_keys.created_at, api_keys.last_used_at",
        category: "usage",
        legal_basis: CONTRACT,
        retention: UNTIL_ERASED,
    },
    PersonalDataField {
        field: "address an API key was last used from",
        location: "api_keys.last_used_ip",
        category: "network address",
        legal_basis: SECURITY,
        retention: UNTIL_ERASED,
    },
    PersonalDataField {
        field: "session address and client",
        location: "sessions.source_ip, sessions.user_agent",
        category: "network address, device",
        legal_basis: SECURITY,
        retention: "until the account is deleted or erased (ended sessions are kept for the owner's listing)",
    },
    PersonalDataField {
        field: "role grants",
        location: "role_grants.user_id",
        category: "authorisation",
        legal_basis: CONTRACT,
        retention: UNTIL_ERASED,
    },
    PersonalDataField {
        field: "failed logins and lockouts",
        location: "auth_failures.subject ('user:<name>', 'ip:<address>')",
        category: "security event, network address",
        legal_basis: SECURITY,
        retention: "until a successful login, the end of the counting window, or erasure",
    },
    PersonalDataField {
        field: "request rate counters",
        location: "rate_limits.subject ('principal:<id>', 'ip:<address>')",
        category: "usage, network address",
        legal_basis: SECURITY,
        retention: "seconds (pruned once the window and any block are over)",
    },
    PersonalDataField {
        field: "authorship of registry objects",
        location: "namespaces, models, versions, aliases: created_by, updated_by; uploads.created_by; role_grants.created_by; webhooks.created_by",
        category: "identifier (actor)",
        legal_basis: OBLIGATION,
        retention: "as long as the object; pseudonymised on erasure",
    },
    PersonalDataField {
        field: "governance decisions and ownership",
        location: "model_owners.username; versions.submitted_by; version_transitions.actor; approvals.reviewer; \
                   policies, eval_suites: created_by, updated_by; policy_exceptions.requested_by, decided_by; \
                   version_cards.created_by; eval_results.submitted_by; eval_jobs: created_by, claimed_by",
        category: "identifier (actor), activity",
        legal_basis: OBLIGATION,
        retention: "as long as the version or policy; pseudonymised on erasure",
    },
    PersonalDataField {
        field: "audit events: actor, target, before/after states",
        location: "audit_events.actor, audit_events.target, audit_events.before_state, audit_events.after_state",
        category: "identifier, account details, activity",
        legal_basis: OBLIGATION,
        retention: "the action's audit retention (default seven years, CAIRN_AUDIT_RETENTION), then pruned; pseudonymised on erasure",
    },
    PersonalDataField {
        field: "audit events: client address and user agent",
        location: "audit_events.source_ip, audit_events.user_agent",
        category: "network address, device",
        legal_basis: OBLIGATION,
        retention: "the action's audit retention (default seven years, CAIRN_AUDIT_RETENTION), then pruned; removed on erasure",
    },
    PersonalDataField {
        field: "data-subject requests",
        location: "gdpr_requests.subject, gdpr_requests.requested_by",
        category: "identifier, request history",
        legal_basis: "legal obligation: demonstrating how requests were answered (Art. 5(2), 6(1)(c))",
        retention: "as long as the audit chain is kept; pseudonymised on erasure",
    },
];

/// Every field of personal data Cairn holds: where, what kind, why and for how long.
pub fn personal_data_inventory() -> &'static [PersonalDataField] {
    INVENTORY
}

/// An export of everything held about one person.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersonalDataExport {
    /// The logged request this export answers.
    pub request_id: String,
    /// The data: `format`, `account`, `api_keys`, `sessions`, `role_grants`,
    /// `auth_failures`, `rate_limits`, `authored`, `audit_events`, `requests`.
    pub data: Value,
}

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Erasure {
    /// The logged request.
    pub request_id: String,
    /// The erased account's id.
    pub subject_id: String,
    /// What now stands where the person was named: `erased:<user id>`.
    pub pseudonym: String,
    /// The audit events whose details were pseudonymised and whose salt was dropped (the
    /// `gdpr.erase` event lists these, and those of earlier erasures it touched).
    pub erased_events: Vec<i64>,
    /// API keys deleted.
    pub api_keys_deleted: u64,
    /// Sessions deleted.
    pub sessions_deleted: u64,
    /// Role grants deleted.
    pub grants_deleted: u64,
    /// Failed-login and rate counters deleted.
    pub counters_deleted: u64,
    /// Authorship values (`created_by`, `updated_by`, request log) replaced by the pseudonym.
    pub records_rewritten: u64,
}

const SELECT_ACCOUNT: &str = "SELECT id, username, display_name, email, kind, \
    EXISTS (SELECT 1 FROM role_grants g WHERE g.user_id = users.id AND g.role = 'admin' AND g.namespace_id IS NULL) AS is_admin, \
    disabled, (totp_enabled_at IS NOT NULL) AS mfa_enabled, password_changed_at, created_at, updated_at \
    FROM users WHERE username = $1";

const SELECT_REQUEST: &str =
    "SELECT id, kind, subject, subject_id, status, requested_by, requested_at, completed_at, note FROM gdpr_requests";

/// Tables and columns that record who made or changed something (values like `user:alice`).
const AUTHORSHIP: &[(&str, &str)] = &[
    ("namespaces", "created_by"),
    ("namespaces", "updated_by"),
    ("models", "created_by"),
    ("models", "updated_by"),
    ("versions", "created_by"),
    ("versions", "updated_by"),
    ("aliases", "created_by"),
    ("aliases", "updated_by"),
    ("uploads", "created_by"),
    ("role_grants", "created_by"),
    ("webhooks", "created_by"),
    ("versions", "submitted_by"),
    ("model_owners", "username"),
    ("version_transitions", "actor"),
    ("approvals", "reviewer"),
    ("policies", "created_by"),
    ("policies", "updated_by"),
    ("policy_exceptions", "requested_by"),
    ("policy_exceptions", "decided_by"),
    ("version_cards", "created_by"),
    ("eval_suites", "created_by"),
    ("eval_suites", "updated_by"),
    ("eval_results", "submitted_by"),
    ("eval_jobs", "created_by"),
    ("eval_jobs", "claimed_by"),
    ("gdpr_requests", "requested_by"),
];

/// Keys whose values describe the person when they sit in an object that identifies them
/// (`name` there is the label they gave an API key: free text, often their own name).
const PERSONAL_KEYS: &[&str] = &["email", "display_name", "name", "source_ip", "user_agent", "last_used_ip"];

/// The person a request is about, and every way the database names them.
struct Subject {
    id: String,
    username: String,
    email: String,
    /// `alice`, `user:alice`, `service:alice`.
    names: [String; 3],
    pseudonym: String,
}

impl Subject {
    fn new(user: &User) -> Self {
        Self {
            id: user.id.clone(),
            username: user.username.clone(),
            email: user.email.clone(),
            names: [user.username.clone(), format!("user:{}", user.username), format!("service:{}", user.username)],
            pseudonym: format!("erased:{}", user.id),
        }
    }

    fn names(&self, value: &str) -> bool {
        self.names.iter().any(|n| n == value)
    }

    fn name_params(&self) -> Vec<crate::Param> {
        params![&self.names[0], &self.names[1], &self.names[2]]
    }

    /// The target rewritten to the pseudonym, if it names the person (`user:alice`,
    /// `grant:alice/viewer@team`).
    fn rewrite_target(&self, target: &str) -> Option<String> {
        if self.names(target) {
            return Some(self.pseudonym.clone());
        }
        let rest = target.strip_prefix("grant:")?;
        let (who, tail) = rest.split_once('/')?;
        (who == self.username).then(|| format!("grant:{}/{tail}", self.pseudonym))
    }

    /// Whether an actor or target names the person.
    fn in_event(&self, actor: &str, target: &str) -> bool {
        self.names(actor) || self.rewrite_target(target).is_some()
    }

    /// Replaces, in a JSON document, every string value that names the person (or is their
    /// address) with the pseudonym, and clears the personal fields of objects that describe
    /// them (`{"username": "alice", "email": …}`, `{"user_id": …, "source_ip": …}`).
    /// Returns whether anything changed.
    fn scrub(&self, v: &mut Value) -> bool {
        match v {
            Value::String(s) if self.names(s) || (!self.email.is_empty() && *s == self.email) => {
                s.clone_from(&self.pseudonym);
                true
            }
            Value::Array(items) => items.iter_mut().fold(false, |changed, item| self.scrub(item) | changed),
            Value::Object(map) => {
                let describes = map.get("username").and_then(Value::as_str).is_some_and(|u| self.names(u))
                    || map.get("user_id").and_then(Value::as_str) == Some(self.id.as_str());
                let mut changed = map.values_mut().fold(false, |changed, item| self.scrub(item) | changed);
                if describes {
                    for key in PERSONAL_KEYS {
                        if let Some(field) = map.get_mut(*key)
                            && !field.is_null()
                        {
                            *field = Value::Null;
                            changed = true;
                        }
                    }
                }
                changed
            }
            _ => false,
        }
    }

    /// A stored JSON state, scrubbed; `None` when it does not change (or is not JSON).
    fn scrub_state(&self, state: Option<&str>) -> Option<String> {
        let mut v: Value = serde_json::from_str(state?).ok()?;
        self.scrub(&mut v).then(|| v.to_string())
    }
}

/// An audit event as erasure and export read it.
#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    seq: i64,
    occurred_at: i64,
    actor: String,
    key_id: Option<String>,
    action: String,
    target: String,
    outcome: String,
    before_state: Option<String>,
    after_state: Option<String>,
    request_id: Option<String>,
    source_ip: Option<String>,
    user_agent: Option<String>,
    salt: Option<String>,
}

const EVENT_COLUMNS: &str = "id, seq, occurred_at, actor, key_id, action, target, outcome, before_state, after_state, \
    request_id, source_ip, user_agent, salt";

/// A stored JSON state as JSON (or as the text it is, if it is not JSON).
fn state(s: Option<&String>) -> Value {
    s.map_or(Value::Null, |s| serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())))
}

async fn load_account(conn: &mut Conn<'_>, username: &str) -> Result<User, StoreError> {
    let mut user: User = conn
        .fetch_optional(SELECT_ACCOUNT, params![username])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("user \"{username}\" does not exist")))?;
    user.roles = load_grants(conn, &user.id).await?;
    Ok(user)
}

#[allow(clippy::too_many_arguments)]
async fn insert_request(
    conn: &mut Conn<'_>,
    kind: RequestKind,
    subject: &str,
    subject_id: &str,
    status: &str,
    requested_by: &str,
    now: i64,
    note: &str,
) -> Result<String, StoreError> {
    let id = uuid::Uuid::now_v7().to_string();
    conn.execute(
        "INSERT INTO gdpr_requests (id, kind, subject, subject_id, status, requested_by, requested_at, completed_at, note) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
        params![&id, kind.as_str(), subject, subject_id, status, requested_by, now, note],
    )
    .await?;
    Ok(id)
}

/// The sealed audit events whose actor or target names the person, oldest first.
async fn events_naming(conn: &mut Conn<'_>, s: &Subject) -> Result<Vec<EventRow>, StoreError> {
    let mut p = s.name_params();
    p.push(format!("grant:{}/%", s.username).into());
    let rows: Vec<EventRow> = conn
        .fetch_all(
            sqlx::AssertSqlSafe(format!(
                "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq IS NOT NULL AND \
                 (actor IN ($1, $2, $3) OR target IN ($1, $2, $3) OR target LIKE $4) ORDER BY seq"
            )),
            p,
        )
        .await?;
    // LIKE treats '_' as a wildcard: keep only the events that really name the person.
    Ok(rows.into_iter().filter(|r| s.in_event(&r.actor, &r.target)).collect())
}

async fn collect(conn: &mut Conn<'_>, user: &User) -> Result<Value, StoreError> {
    let s = Subject::new(user);
    let (has_password, has_totp, external_issuer, external_subject): (bool, bool, Option<String>, Option<String>) =
        conn.fetch_one(
            "SELECT (password_hash IS NOT NULL), (totp_secret IS NOT NULL OR totp_pending_secret IS NOT NULL), \
             external_issuer, external_subject FROM users WHERE id = $1",
            params![&user.id],
        )
        .await?;
    let (codes, codes_used): (i64, i64) = conn
        .fetch_one("SELECT COUNT(*), COUNT(used_at) FROM recovery_codes WHERE user_id = $1", params![&user.id])
        .await?;
    let keys: Vec<ApiKey> = conn
        .fetch_all(
            "SELECT k.id, k.user_id, u.username, u.kind AS user_kind, k.name, k.scopes, k.namespaces, k.created_at, \
             k.expires_at, k.last_used_at, k.last_used_ip, k.revoked_at, k.replaced_by, k.bootstrap \
             FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.user_id = $1 ORDER BY k.created_at, k.id",
            params![&user.id],
        )
        .await?;
    type SessionRow = (String, bool, i64, i64, i64, Option<i64>, Option<String>, Option<String>);
    let sessions: Vec<SessionRow> = conn
        .fetch_all(
            "SELECT id, mfa_verified, created_at, last_seen_at, expires_at, revoked_at, source_ip, user_agent \
             FROM sessions WHERE user_id = $1 ORDER BY created_at, id",
            params![&user.id],
        )
        .await?;
    let grants: Vec<(String, String, Option<String>, i64, String)> = conn
        .fetch_all(
            "SELECT g.id, g.role, n.name, g.created_at, g.created_by FROM role_grants g \
             LEFT JOIN namespaces n ON n.id = g.namespace_id WHERE g.user_id = $1 ORDER BY g.created_at, g.id",
            params![&user.id],
        )
        .await?;
    let failures: Vec<AuthFailure> = conn
        .fetch_all(
            "SELECT subject, failures, first_at, last_at, locked_until FROM auth_failures WHERE subject = $1",
            params![lockout::user_subject(&user.username)],
        )
        .await?;
    let limits: Vec<(String, i64, i64, Option<i64>, i64)> = conn
        .fetch_all(
            "SELECT subject, window_start, count, blocked_until, updated_at FROM rate_limits WHERE subject = $1",
            params![format!("principal:{}", user.id)],
        )
        .await?;
    let by = "IN ($1, $2, $3)";
    type Authored = (String, i64, String, i64, String);
    let namespaces: Vec<Authored> = conn
        .fetch_all(
            sqlx::AssertSqlSafe(format!(
                "SELECT name, created_at, created_by, updated_at, updated_by FROM namespaces \
                 WHERE created_by {by} OR updated_by {by} ORDER BY name"
            )),
            s.name_params(),
        )
        .await?;
    let models: Vec<Authored> = conn
        .fetch_all(
            sqlx::AssertSqlSafe(format!(
                "SELECT full_name, created_at, created_by, updated_at, updated_by FROM models \
                 WHERE created_by {by} OR updated_by {by} ORDER BY full_name"
            )),
            s.name_params(),
        )
        .await?;
    let versions: Vec<(String, i64, i64, String, i64, String)> = conn
        .fetch_all(
            sqlx::AssertSqlSafe(format!(
                "SELECT m.full_name, v.number, v.created_at, v.created_by, v.updated_at, v.updated_by \
                 FROM versions v JOIN models m ON m.id = v.model_id \
                 WHERE v.created_by {by} OR v.updated_by {by} ORDER BY m.full_name, v.number"
            )),
            s.name_params(),
        )
        .await?;
    let aliases: Vec<(String, String, i64, String, i64, String)> = conn
        .fetch_all(
            sqlx::AssertSqlSafe(format!(
                "SELECT m.full_name, a.alias, a.created_at, a.created_by, a.updated_at, a.updated_by \
                 FROM aliases a JOIN models m ON m.id = a.model_id \
                 WHERE a.created_by {by} OR a.updated_by {by} ORDER BY m.full_name, a.alias"
            )),
            s.name_params(),
        )
        .await?;
    let uploads: Vec<(String, String, String, i64)> = conn
        .fetch_all(
            sqlx::AssertSqlSafe(format!(
                "SELECT u.id, m.full_name, u.state, u.created_at FROM uploads u JOIN models m ON m.id = u.model_id \
                 WHERE u.created_by {by} ORDER BY u.created_at, u.id"
            )),
            s.name_params(),
        )
        .await?;
    // Grants this person gave (not whom to: that is another person's data).
    let given: Vec<(String, String, Option<String>, i64)> = conn
        .fetch_all(
            sqlx::AssertSqlSafe(format!(
                "SELECT g.id, g.role, n.name, g.created_at FROM role_grants g \
                 LEFT JOIN namespaces n ON n.id = g.namespace_id WHERE g.created_by {by} ORDER BY g.created_at, g.id"
            )),
            s.name_params(),
        )
        .await?;
    let events = events_naming(conn, &s).await?;
    let requests: Vec<GdprRequest> = conn
        .fetch_all(
            sqlx::AssertSqlSafe(format!("{SELECT_REQUEST} WHERE subject_id = $1 ORDER BY requested_at, id")),
            params![&user.id],
        )
        .await?;
    let authored = |rows: &[Authored]| -> Vec<Value> {
        rows.iter()
            .map(|(name, ca, cb, ua, ub)| {
                json!({ "name": name, "created_at": ca, "created_by": cb, "updated_at": ua, "updated_by": ub })
            })
            .collect()
    };
    Ok(json!({
        "format": EXPORT_FORMAT,
        "account": {
            "id": user.id,
            "username": user.username,
            "display_name": user.display_name,
            "email": user.email,
            "kind": user.kind,
            "is_admin": user.is_admin,
            "roles": user.roles.iter().map(|(r, ns)| json!({ "role": r, "namespace": ns })).collect::<Vec<_>>(),
            "disabled": user.disabled,
            "created_at": user.created_at,
            "updated_at": user.updated_at,
            "password_changed_at": user.password_changed_at,
            "external_issuer": external_issuer,
            "external_subject": external_subject,
            // Secrets are never exported; whether they exist is.
            "has_password": has_password,
            "mfa_enabled": user.mfa_enabled,
            "has_totp_secret": has_totp,
            "recovery_codes": { "issued": codes, "used": codes_used },
        },
        "api_keys": keys,
        "sessions": sessions.iter().map(|(id, mfa, ca, seen, exp, rev, ip, ua)| json!({
            "id": id, "mfa_verified": mfa, "created_at": ca, "last_seen_at": seen, "expires_at": exp,
            "revoked_at": rev, "source_ip": ip, "user_agent": ua,
        })).collect::<Vec<_>>(),
        "role_grants": grants.iter().map(|(id, role, ns, at, by)| json!({
            "id": id, "role": role, "namespace": ns, "created_at": at, "created_by": by,
        })).collect::<Vec<_>>(),
        "auth_failures": failures,
        "rate_limits": limits.iter().map(|(subject, start, count, blocked, at)| json!({
            "subject": subject, "window_start": start, "count": count, "blocked_until": blocked, "updated_at": at,
        })).collect::<Vec<_>>(),
        "authored": {
            "namespaces": authored(&namespaces),
            "models": authored(&models),
            "versions": versions.iter().map(|(m, n, ca, cb, ua, ub)| json!({
                "model": m, "version": n, "created_at": ca, "created_by": cb, "updated_at": ua, "updated_by": ub,
            })).collect::<Vec<_>>(),
            "aliases": aliases.iter().map(|(m, a, ca, cb, ua, ub)| json!({
                "model": m, "alias": a, "created_at": ca, "created_by": cb, "updated_at": ua, "updated_by": ub,
            })).collect::<Vec<_>>(),
            "uploads": uploads.iter().map(|(id, m, st, at)| json!({
                "id": id, "model": m, "state": st, "created_at": at,
            })).collect::<Vec<_>>(),
            "grants_given": given.iter().map(|(id, role, ns, at)| json!({
                "id": id, "role": role, "namespace": ns, "created_at": at,
            })).collect::<Vec<_>>(),
        },
        // Where someone else acted on the person, that someone's address, client and key are
        // theirs, not the subject's: left out.
        "audit_events": events.iter().map(|e| {
            let own = s.names[1..].contains(&e.actor);
            json!({
                "seq": e.seq, "time": e.occurred_at, "action": e.action, "outcome": e.outcome, "actor": e.actor,
                "key_id": e.key_id.as_ref().filter(|_| own), "target": e.target,
                "before": state(e.before_state.as_ref()), "after": state(e.after_state.as_ref()),
                "request_id": e.request_id, "source_ip": e.source_ip.as_ref().filter(|_| own),
                "user_agent": e.user_agent.as_ref().filter(|_| own), "erased": e.salt.is_none(),
            })
        }).collect::<Vec<_>>(),
        "requests": requests,
    }))
}

impl Store {
    /// Everything held about the account `username`, machine-readable (never a password
    /// hash, token hash or TOTP secret: only whether they exist). Logs a completed `access`
    /// or `portability` request and audits it as `gdpr.export`, in the same transaction.
    pub async fn personal_data(
        &self,
        ctx: &AuditContext,
        username: &str,
        kind: RequestKind,
    ) -> Result<PersonalDataExport, StoreError> {
        // On PostgreSQL, what this process committed joins the chain before it is read.
        self.db.settle_audit().await?;
        if !matches!(kind, RequestKind::Access | RequestKind::Portability) {
            return Err(StoreError::Invalid("an export answers an access or portability request".into()));
        }
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let user = load_account(&mut conn, username).await?;
        let mut data = collect(&mut conn, &user).await?;
        let request_id =
            insert_request(&mut conn, kind, username, &user.id, "completed", &ctx.actor, now, "exported").await?;
        data["exported_at"] = json!(now);
        data["request_id"] = json!(request_id);
        audit::record(
            &mut conn,
            ctx,
            now,
            "gdpr.export",
            &format!("user:{username}"),
            None::<&()>,
            Some(&json!({ "request": request_id, "kind": kind.as_str() })),
        )
        .await?;
        tx.commit().await?;
        Ok(PersonalDataExport { request_id, data })
    }

    /// Corrects an account's shown name and contact address (`None` leaves a field as it
    /// is). Logs a completed `rectification` request and audits it as `gdpr.rectify`.
    pub async fn rectify(
        &self,
        ctx: &AuditContext,
        username: &str,
        display_name: Option<&str>,
        email: Option<&str>,
    ) -> Result<User, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = load_account(&mut conn, username).await?;
        let display_name = display_name.unwrap_or(&before.display_name);
        let email = email.unwrap_or(&before.email);
        conn.execute(
            "UPDATE users SET display_name = $1, email = $2, updated_at = $3 WHERE id = $4",
            params![display_name, email, now, &before.id],
        )
        .await?;
        let after = load_account(&mut conn, username).await?;
        let changed: Vec<&str> =
            [("display_name", before.display_name != after.display_name), ("email", before.email != after.email)]
                .iter()
                .filter_map(|(f, c)| c.then_some(*f))
                .collect();
        let note = if changed.is_empty() {
            "nothing to correct".to_owned()
        } else {
            format!("corrected {}", changed.join(", "))
        };
        insert_request(
            &mut conn,
            RequestKind::Rectification,
            username,
            &before.id,
            "completed",
            &ctx.actor,
            now,
            &note,
        )
        .await?;
        audit::record(&mut conn, ctx, now, "gdpr.rectify", &format!("user:{username}"), Some(&before), Some(&after))
            .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Erases the account `username` (see the module docs), in one transaction, and logs a
    /// completed `erasure` request. The last enabled administrator cannot be erased: that
    /// refusal is logged as a `rejected` request and a failed `gdpr.erase` event.
    pub async fn erase(&self, ctx: &AuditContext, username: &str) -> Result<Erasure, StoreError> {
        // On PostgreSQL, what this process committed joins the chain before it is read.
        self.db.settle_audit().await?;
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let user = load_account(&mut conn, username).await?;
        let s = Subject::new(&user);
        if user.is_admin && !user.disabled && other_enabled_admins(&mut conn, &user.id).await? == 0 {
            // Rolls the erasure back before the refusal is logged in a transaction of its own.
            drop(tx);
            // The stored reason does not name the person (a later erasure could not find it).
            let reason = "the account is the last enabled administrator: grant the admin role to another account first";
            self.reject_erasure(ctx, &s, reason).await?;
            return Err(StoreError::Conflict(format!("\"{username}\": {reason}")));
        }

        // The account and what hangs off it.
        let sessions_deleted = conn.execute("DELETE FROM sessions WHERE user_id = $1", params![&s.id]).await?;
        let api_keys_deleted = conn.execute("DELETE FROM api_keys WHERE user_id = $1", params![&s.id]).await?;
        let grants_deleted = conn.execute("DELETE FROM role_grants WHERE user_id = $1", params![&s.id]).await?;
        conn.execute("DELETE FROM recovery_codes WHERE user_id = $1", params![&s.id]).await?;
        let mut counters_deleted = conn
            .execute("DELETE FROM auth_failures WHERE subject = $1", params![lockout::user_subject(&s.username)])
            .await?;
        counters_deleted +=
            conn.execute("DELETE FROM rate_limits WHERE subject = $1", params![format!("principal:{}", s.id)]).await?;
        conn.execute("DELETE FROM users WHERE id = $1", params![&s.id]).await?;

        // Authorship and the request log keep the pseudonym.
        let mut records_rewritten = 0;
        for (table, column) in AUTHORSHIP {
            let mut p = params![&s.pseudonym];
            p.extend(s.name_params());
            records_rewritten += conn
                .execute(
                    sqlx::AssertSqlSafe(format!("UPDATE {table} SET {column} = $1 WHERE {column} IN ($2, $3, $4)")),
                    p,
                )
                .await?;
        }
        records_rewritten += conn
            .execute("UPDATE gdpr_requests SET subject = $1 WHERE subject_id = $2", params![&s.pseudonym, &s.id])
            .await?;

        // Audit events: candidates by name (a cheap over-approximation), then parsed and
        // rewritten exactly.
        let mut p = s.name_params();
        p.push(format!("grant:{}/%", s.username).into());
        p.push(format!("%{}\"%", s.username).into());
        p.push(format!("%{}%", s.id).into());
        p.push((!s.email.is_empty()).then(|| format!("%{}%", s.email)).into());
        let candidates: Vec<EventRow> = conn
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq IS NOT NULL AND \
                     (actor IN ($1, $2, $3) OR target IN ($1, $2, $3) OR target LIKE $4 \
                      OR before_state LIKE $5 OR after_state LIKE $5 OR before_state LIKE $6 OR after_state LIKE $6 \
                      OR before_state LIKE $7 OR after_state LIKE $7) ORDER BY seq"
                )),
                p,
            )
            .await?;
        let mut erased = BTreeSet::new();
        for e in candidates {
            let actor = s.names(&e.actor).then(|| s.pseudonym.clone());
            let target = s.rewrite_target(&e.target);
            let before = s.scrub_state(e.before_state.as_deref());
            let after = s.scrub_state(e.after_state.as_deref());
            if actor.is_none() && target.is_none() && before.is_none() && after.is_none() {
                continue;
            }
            // An earlier erasure event whose details are erased now stops vouching for the
            // events it listed: this erasure lists them instead.
            if e.action == cairn_audit::verify::ERASE_ACTION
                && e.salt.is_some()
                && let Value::Object(m) = state(e.after_state.as_ref())
                && let Some(Value::Array(list)) = m.get("erased_events")
            {
                erased.extend(list.iter().filter_map(Value::as_i64));
            }
            conn.execute(
                "UPDATE audit_events SET actor = $1, target = $2, before_state = $3, after_state = $4, \
                 source_ip = NULL, user_agent = NULL, salt = NULL WHERE id = $5",
                params![
                    actor.unwrap_or(e.actor),
                    target.unwrap_or(e.target),
                    before.or(e.before_state),
                    after.or(e.after_state),
                    e.id
                ],
            )
            .await?;
            erased.insert(e.seq);
        }
        let erased_events: Vec<i64> = erased.into_iter().collect();
        let note = format!("account erased; {} audit events pseudonymised", erased_events.len());
        let request_id =
            insert_request(&mut conn, RequestKind::Erasure, &s.pseudonym, &s.id, "completed", &ctx.actor, now, &note)
                .await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            cairn_audit::verify::ERASE_ACTION,
            &format!("subject:{}", s.id),
            None::<&()>,
            Some(&json!({ "subject": s.id, "request": request_id, "erased_events": erased_events })),
        )
        .await?;
        tx.commit().await?;
        Ok(Erasure {
            request_id,
            subject_id: s.id,
            pseudonym: s.pseudonym,
            erased_events,
            api_keys_deleted,
            sessions_deleted,
            grants_deleted,
            counters_deleted,
            records_rewritten,
        })
    }

    /// Logs a refused erasure (its own transaction: the erasure's rolled back).
    async fn reject_erasure(&self, ctx: &AuditContext, s: &Subject, reason: &str) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let request_id =
            insert_request(&mut conn, RequestKind::Erasure, &s.username, &s.id, "rejected", &ctx.actor, now, reason)
                .await?;
        audit::record_outcome(
            &mut conn,
            ctx,
            now,
            cairn_audit::verify::ERASE_ACTION,
            &format!("subject:{}", s.id),
            "failure",
            None::<&()>,
            Some(&json!({ "subject": s.id, "request": request_id, "reason": reason })),
        )
        .await?;
        tx.commit().await
    }

    /// Logged data-subject requests, newest first: all, or those about `subject` (a login
    /// name or an erased account's pseudonym); at most `limit` (1–1000).
    pub async fn list_gdpr_requests(
        &self,
        subject: Option<&str>,
        limit: usize,
    ) -> Result<Vec<GdprRequest>, StoreError> {
        let limit = i64::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "{SELECT_REQUEST} WHERE ($1 IS NULL OR subject = $1) ORDER BY requested_at DESC, id DESC LIMIT $2"
                )),
                params![subject, limit],
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Subject {
        Subject {
            id: "0190-id".into(),
            username: "alice".into(),
            email: "alice@example.org".into(),
            names: ["alice".into(), "user:alice".into(), "service:alice".into()],
            pseudonym: "erased:0190-id".into(),
        }
    }

    #[test]
    fn scrubbing_replaces_whole_values_only() {
        let s = subject();
        let mut v = json!({
            "username": "alice", "email": "alice@example.org", "display_name": "Alice A.",
            "note": "alice was here", "by": "user:alice", "other": "malice",
            "list": ["service:alice", "bob"], "nested": { "user_id": "0190-id", "source_ip": "192.0.2.1" },
        });
        assert!(s.scrub(&mut v));
        assert_eq!(
            v,
            json!({
                "username": "erased:0190-id", "email": null, "display_name": null,
                "note": "alice was here", "by": "erased:0190-id", "other": "malice",
                "list": ["erased:0190-id", "bob"], "nested": { "user_id": "0190-id", "source_ip": null },
            })
        );
        let mut untouched = json!({ "username": "bob", "email": "bob@example.org" });
        assert!(!s.scrub(&mut untouched));
    }

    #[test]
    fn targets_naming_the_person_are_rewritten() {
        let s = subject();
        assert_eq!(s.rewrite_target("user:alice").as_deref(), Some("erased:0190-id"));
        assert_eq!(s.rewrite_target("grant:alice/viewer@team").as_deref(), Some("grant:erased:0190-id/viewer@team"));
        assert_eq!(s.rewrite_target("grant:alicex/viewer"), None);
        assert_eq!(s.rewrite_target("model:alice/m"), None);
    }

    #[test]
    fn the_inventory_names_every_table_with_personal_data() {
        let places: String = personal_data_inventory().iter().map(|f| f.location).collect::<Vec<_>>().join(" ");
        for table in
            ["users.", "api_keys.", "sessions.", "role_grants", "auth_failures.", "audit_events.", "gdpr_requests."]
        {
            assert!(places.contains(table), "{table} is missing from the inventory");
        }
    }
}
