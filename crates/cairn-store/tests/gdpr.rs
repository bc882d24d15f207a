//! Data-subject requests on SQLite and PostgreSQL: an export holds the person's data and no
//! secret, rectification corrects and is audited, erasure leaves the person's name in no text
//! column of any table while the audit chain still verifies, other people's events are
//! untouched, the last administrator cannot be erased, and every request is logged.

use cairn_audit::BreakKind;
use cairn_core::ModelRef;
use cairn_store::gdpr::RequestKind;
use cairn_store::lockout::{FailurePolicy, FailureSubject};
use cairn_store::model::NewModel;
use cairn_store::session::NewSession;
use cairn_store::user::{NewApiKey, NewUser, UserProfile};
use cairn_store::version::NewVersion;
use cairn_store::{AuditContext, DbOptions, Store, StoreError, params};
use cairn_test_utils::raw_sql as sql;
use cairn_test_utils::{Backend, database_url};

struct Fixture {
    store: Store,
    _dir: tempfile::TempDir,
}

async fn open(backend: Backend, test: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(backend, dir.path(), test).await?;
    let store = Store::open(&url, &DbOptions::default()).await.unwrap();
    Some(Fixture { store, _dir: dir })
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(f) = super::open(cairn_test_utils::Backend::Sqlite, concat!("sqlite::", stringify!($name))).await {
                        super::$name(f.store.clone()).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(f) = super::open(cairn_test_utils::Backend::Postgres, concat!("postgres::", stringify!($name))).await {
                        super::$name(f.store.clone()).await;
                    }
                }
            )*
        }
    };
}

suite!(
    export_holds_the_data_and_no_secret,
    rectification_corrects_and_is_audited,
    erasure_leaves_no_trace_and_the_chain_still_verifies,
    the_last_administrator_cannot_be_erased,
);

const PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$SECRETPASSWORDHASH";
const TOKEN_HASH: &str = "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfaceTOKENHASH";
const SESSION_HASH: &str = "cafebabecafebabecafebabecafebabecafebabecafebabecafebabeSESSIONHASH";
const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPTOTPSECRET";
const ADDRESS: &str = "192.0.2.77";
const AGENT: &str = "alice-laptop-agent/1.0";

/// A person acting; alice from her own address and browser, others from elsewhere.
fn as_user(name: &str) -> AuditContext {
    let (address, agent) = if name == "alice" { (ADDRESS, AGENT) } else { ("203.0.113.9", "other-agent/2") };
    AuditContext {
        actor: format!("user:{name}"),
        source_ip: Some(address.into()),
        user_agent: Some(agent.into()),
        ..AuditContext::default()
    }
}

fn root() -> AuditContext {
    AuditContext { actor: "user:root".into(), source_ip: Some("198.51.100.1".into()), ..AuditContext::default() }
}

fn new_model(s: &str) -> NewModel {
    NewModel { description: "a model".into(), ..NewModel::named(ModelRef::parse(s).unwrap()) }
}

/// An administrator `root`, a person `alice` with everything a person can leave behind, and
/// a person `bob` who works beside her.
async fn populate(store: &Store) {
    let system = AuditContext::system();
    store
        .create_user(
            &system,
            &NewUser { username: "root".into(), password_hash: None, is_admin: true, kind: "user".into() },
        )
        .await
        .unwrap();
    let profile = UserProfile { display_name: "Alice Liddell".into(), email: "alice@example.org".into() };
    let new = NewUser {
        username: "alice".into(),
        password_hash: Some(PASSWORD_HASH.into()),
        is_admin: false,
        kind: "user".into(),
    };
    store.create_user_with_profile(&root(), &new, &profile).await.unwrap();
    let bob = NewUser { username: "bob".into(), password_hash: None, is_admin: false, kind: "user".into() };
    store.create_user_with_profile(&root(), &bob, &UserProfile::default()).await.unwrap();
    sql(store, "UPDATE users SET totp_secret = $1 WHERE username = 'alice'", params![TOTP_SECRET]).await;
    let alice = store.find_user("alice").await.unwrap().unwrap();

    store.create_grant(&root(), "alice", "model_owner", None).await.unwrap();
    let key = store
        .create_api_key(
            &root(),
            &NewApiKey {
                user_id: alice.id.clone(),
                name: "laptop key".into(),
                token_hash: TOKEN_HASH.into(),
                scopes: "read write".into(),
                expires_at: None,
                namespaces: String::new(),
                bootstrap: false,
            },
        )
        .await
        .unwrap();
    store.touch_api_key(&key.id, Some(ADDRESS)).await.unwrap();
    let session = NewSession {
        token_hash: SESSION_HASH.into(),
        user_id: alice.id.clone(),
        mfa_verified: false,
        expires_at: store.now() + 3_600_000,
        source_ip: Some(ADDRESS.into()),
        user_agent: Some(AGENT.into()),
    };
    store.open_session(&as_user("alice"), "alice", &session, None, Some("password")).await.unwrap();
    store
        .record_auth_failure(
            &AuditContext { actor: "anonymous".into(), source_ip: Some(ADDRESS.into()), ..AuditContext::default() },
            "auth.login",
            "user:alice",
            &[FailureSubject { subject: "user:alice".into(), max_failures: 10 }],
            FailurePolicy { window_ms: 60_000, lock_ms: 60_000 },
        )
        .await
        .unwrap();

    store.create_model(&as_user("alice"), &new_model("team/fraud")).await.unwrap();
    let m = ModelRef::parse("team/fraud").unwrap();
    store.create_version(&as_user("alice"), &m, &NewVersion::default()).await.unwrap();
    store.create_model(&as_user("bob"), &new_model("team/churn")).await.unwrap();
    store.create_version(&as_user("bob"), &m, &NewVersion::default()).await.unwrap();
}

async fn export_holds_the_data_and_no_secret(store: Store) {
    populate(&store).await;
    let export = store.personal_data(&root(), "alice", RequestKind::Access).await.unwrap();
    let d = &export.data;
    assert_eq!(d["format"], "cairn.personal-data/v1");
    assert_eq!(d["account"]["username"], "alice");
    assert_eq!(d["account"]["email"], "alice@example.org");
    assert_eq!(d["account"]["display_name"], "Alice Liddell");
    assert_eq!(d["account"]["has_password"], true);
    assert_eq!(d["account"]["has_totp_secret"], true);
    assert_eq!(d["api_keys"][0]["name"], "laptop key");
    assert_eq!(d["api_keys"][0]["last_used_ip"], ADDRESS);
    assert_eq!(d["sessions"][0]["source_ip"], ADDRESS);
    assert_eq!(d["sessions"][0]["user_agent"], AGENT);
    assert_eq!(d["role_grants"][0]["role"], "model_owner");
    assert_eq!(d["auth_failures"][0]["subject"], "user:alice");
    assert_eq!(d["authored"]["models"][0]["name"], "team/fraud");
    assert_eq!(d["authored"]["versions"][0]["version"], 1);
    assert_eq!(d["authored"]["versions"].as_array().unwrap().len(), 1, "bob's version is not hers");
    let actions: Vec<&str> =
        d["audit_events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in ["user.create", "grant.create", "auth.login", "model.create", "version.create"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert!(!actions.contains(&"gdpr.export"), "the export's own event is written after it is read");
    let text = d.to_string();
    for secret in [PASSWORD_HASH, "SECRETPASSWORDHASH", TOKEN_HASH, SESSION_HASH, TOTP_SECRET] {
        assert!(!text.contains(secret), "the export contains a secret: {secret}");
    }
    assert!(!text.contains("churn"), "bob's model is not alice's data");

    let logged = store.list_gdpr_requests(Some("alice"), 10).await.unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!((logged[0].kind.as_str(), logged[0].status.as_str()), ("access", "completed"));
    assert_eq!(logged[0].id, export.request_id);
    let port = store.personal_data(&root(), "alice", RequestKind::Portability).await.unwrap();
    assert_eq!(port.data["account"]["username"], "alice");
    let events = store
        .list_audit_events(&cairn_store::audit::AuditQuery {
            action: Some("gdpr.export".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.items.len(), 2);
    assert_eq!(events.items[0].target, "user:alice");
    assert!(matches!(store.personal_data(&root(), "nobody", RequestKind::Access).await, Err(StoreError::NotFound(_))));
}

async fn rectification_corrects_and_is_audited(store: Store) {
    populate(&store).await;
    let after = store.rectify(&root(), "alice", None, Some("alice@new.example.org")).await.unwrap();
    assert_eq!(after.email, "alice@new.example.org");
    assert_eq!(after.display_name, "Alice Liddell");
    assert_eq!(store.find_user("alice").await.unwrap().unwrap().email, "alice@new.example.org");
    let events = store
        .list_audit_events(&cairn_store::audit::AuditQuery {
            action: Some("gdpr.rectify".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.items.len(), 1);
    let e = &events.items[0];
    assert_eq!((e.actor.as_str(), e.target.as_str()), ("user:root", "user:alice"));
    assert!(e.before_state.as_deref().unwrap().contains("alice@example.org"));
    assert!(e.after_state.as_deref().unwrap().contains("alice@new.example.org"));
    let logged = store.list_gdpr_requests(None, 10).await.unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!((logged[0].kind.as_str(), logged[0].status.as_str()), ("rectification", "completed"));
    assert_eq!(logged[0].note, "corrected email");
    assert!(store.verify_audit_chain(vec![]).await.unwrap().ok());
}

/// Every (table, column) of text in the database.
async fn text_columns(store: &Store) -> Vec<(String, String)> {
    let sql = match store.backend() {
        cairn_store::Backend::Sqlite => {
            "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND upper(p.type) = 'TEXT' ORDER BY m.name, p.name"
        }
        cairn_store::Backend::Postgres => {
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND data_type = 'text' ORDER BY 1, 2"
        }
    };
    store.db().read().await.unwrap().conn().fetch_all(sql, vec![]).await.unwrap()
}

/// The (table, column, value) cells anywhere in the database that contain `needle`.
async fn cells_containing(store: &Store, needle: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let columns = text_columns(store).await;
    assert!(columns.len() > 40, "found only {} text columns", columns.len());
    for (table, column) in columns {
        let rows: Vec<(String,)> = store
            .db()
            .read()
            .await
            .unwrap()
            .conn()
            .fetch_all(
                sqlx::AssertSqlSafe(format!("SELECT \"{column}\" FROM \"{table}\" WHERE lower(\"{column}\") LIKE $1")),
                params![format!("%{}%", needle.to_lowercase())],
            )
            .await
            .unwrap();
        out.extend(rows.into_iter().map(|(v,)| (table.clone(), column.clone(), v)));
    }
    out
}

async fn erasure_leaves_no_trace_and_the_chain_still_verifies(store: Store) {
    populate(&store).await;
    store.rectify(&root(), "alice", Some("Alice L."), None).await.unwrap();
    store.personal_data(&as_user("alice"), "alice", RequestKind::Access).await.unwrap();
    let alice = store.find_user("alice").await.unwrap().unwrap();
    let before = store.audit_records(0, None, 100_000).await.unwrap();
    assert!(!cells_containing(&store, "alice").await.is_empty());

    let erasure = store.erase(&root(), "alice").await.unwrap();
    assert_eq!(erasure.pseudonym, format!("erased:{}", alice.id));
    assert_eq!(erasure.subject_id, alice.id);
    assert_eq!((erasure.api_keys_deleted, erasure.sessions_deleted, erasure.grants_deleted), (1, 1, 1));
    assert_eq!(erasure.counters_deleted, 1);
    assert!(erasure.records_rewritten >= 4, "{erasure:?}");
    assert!(store.find_user("alice").await.unwrap().is_none());

    // Nothing anywhere names her, where she was, what she used or how to reach her.
    for needle in ["alice", "Liddell", "example.org", ADDRESS, AGENT] {
        let found = cells_containing(&store, needle).await;
        assert!(found.is_empty(), "{needle:?} is still in the database: {found:#?}");
    }

    // The chain verifies; exactly the events she appeared in are erased, and listed.
    let report = store.verify_audit_chain(vec![]).await.unwrap();
    assert!(report.ok(), "{:?}", report.first_break);
    assert_eq!(report.erased, erasure.erased_events.len() as u64);
    let after = store.audit_records(0, None, 100_000).await.unwrap();
    let erased: Vec<i64> = after.iter().filter(|r| r.salt.is_none()).map(|r| r.seq).collect();
    assert_eq!(erased, erasure.erased_events);
    let old_actions: Vec<&str> = after.iter().filter(|r| erased.contains(&r.seq)).map(|r| r.action.as_str()).collect();
    for a in ["user.create", "grant.create", "api_key.create", "auth.login", "model.create", "gdpr.export"] {
        assert!(old_actions.contains(&a), "{a} is not among the erased events {old_actions:?}");
    }
    // Sequence, time, action and outcome of every event stay; only details were rewritten.
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (b.seq, b.time, &b.action, &b.outcome, &b.details_digest),
            (a.seq, a.time, &a.action, &a.outcome, &a.details_digest)
        );
        if !erased.contains(&b.seq) {
            assert_eq!(b, a, "event {} does not name alice and must be untouched", b.seq);
        }
    }
    let bobs: Vec<_> =
        after.iter().filter(|r| r.details.actor == "user:bob" && r.details.target == "model:team/churn").collect();
    assert_eq!(bobs.len(), 1);
    assert!(bobs[0].salt.is_some(), "bob's events keep their details");
    let erase_event = after.last().unwrap();
    assert_eq!(erase_event.action, "gdpr.erase");
    assert_eq!(erase_event.details.actor, "user:root");
    assert_eq!(erase_event.details.target, format!("subject:{}", alice.id));
    let listed: serde_json::Value = serde_json::from_str(erase_event.details.after.as_deref().unwrap()).unwrap();
    assert_eq!(listed["subject"], alice.id);
    assert_eq!(listed["erased_events"], serde_json::json!(erasure.erased_events));

    // The request log: her earlier requests now carry the pseudonym.
    let logged = store.list_gdpr_requests(None, 10).await.unwrap();
    let mut kinds: Vec<(&str, &str, &str)> =
        logged.iter().map(|r| (r.kind.as_str(), r.status.as_str(), r.subject.as_str())).collect();
    kinds.sort_unstable();
    let p = erasure.pseudonym.as_str();
    assert_eq!(kinds, vec![("access", "completed", p), ("erasure", "completed", p), ("rectification", "completed", p)]);
    let access = logged.iter().find(|r| r.kind == "access").unwrap();
    assert_eq!(access.requested_by, p, "she asked for her own export");
    assert!(matches!(store.erase(&root(), "alice").await, Err(StoreError::NotFound(_))));

    // Editing an erased event's details cannot be detected by digest any more: its salt is
    // gone. That is the price of erasure (docs/PRIVACY.md).
    let first = erasure.erased_events[0];
    sql(&store, "UPDATE audit_events SET after_state = '{\"forged\":true}' WHERE seq = $1", params![first]).await;
    assert!(store.verify_audit_chain(vec![]).await.unwrap().ok());
    // But dropping the salt of an event no erasure lists is found.
    let bob_seq = bobs[0].seq;
    sql(&store, "UPDATE audit_events SET salt = NULL WHERE seq = $1", params![bob_seq]).await;
    let report = store.verify_audit_chain(vec![]).await.unwrap();
    let broken = report.first_break.expect("an unrecorded erasure is a break");
    assert_eq!((broken.kind, broken.seq), (BreakKind::UnrecordedErasure, bob_seq));
}

async fn the_last_administrator_cannot_be_erased(store: Store) {
    populate(&store).await;
    let refused = store.erase(&as_user("bob"), "root").await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("last enabled administrator")),
        "{refused:?}"
    );
    assert!(store.find_user("root").await.unwrap().is_some());
    let logged = store.list_gdpr_requests(Some("root"), 10).await.unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!((logged[0].kind.as_str(), logged[0].status.as_str()), ("erasure", "rejected"));
    assert!(logged[0].note.contains("last enabled administrator"));
    let report = store.verify_audit_chain(vec![]).await.unwrap();
    assert!(report.ok(), "{:?}", report.first_break);
    assert_eq!(report.erased, 0);

    // With a second administrator the first may go. Erasing later the one who erased it
    // pseudonymises that first `gdpr.erase` event too: the second one takes over its list,
    // so both erasures verify together.
    store.create_grant(&root(), "bob", "admin", None).await.unwrap();
    let first = store.erase(&as_user("bob"), "root").await.unwrap();
    store.create_grant(&as_user("bob"), "alice", "admin", None).await.unwrap();
    let second = store.erase(&as_user("alice"), "bob").await.unwrap();
    for seq in &first.erased_events {
        assert!(second.erased_events.contains(seq), "event {seq} of the first erasure is no longer listed");
    }
    let report = store.verify_audit_chain(vec![]).await.unwrap();
    assert!(report.ok(), "{:?}", report.first_break);
    let erased = store.audit_records(0, None, 100_000).await.unwrap().iter().filter(|r| r.salt.is_none()).count();
    assert_eq!(report.erased, erased as u64);
    assert!(store.find_user("bob").await.unwrap().is_none());
}
