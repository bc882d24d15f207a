//! `cairn serve`: start-up (data dir, database, bootstrap admin), the listen loop (HTTP, or
//! HTTPS with certificate reload, see [`crate::tls`]), and a graceful shutdown that drains
//! the load balancer first and then lets in-flight requests finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::RustlsConfig;
use cairn_store::user::NewApiKey;
use cairn_store::{DbOptions, Store};

use crate::app::{AppState, build_router};
use crate::auth;
use crate::settings::{LogFormat, Settings, redact_url};

/// Installs the global log subscriber (text or JSON lines on stderr).
pub fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match settings.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Lifetime of the admin API key made at first start.
const FIRST_KEY_DAYS: i64 = 90;

/// Opens the store, creating the data dir (mode 0700) and the bootstrap admin.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    create_private_dir(&settings.data_dir)?;
    let url = settings.database_url();
    let opts = DbOptions { max_connections: settings.db_max_connections, ..DbOptions::default() };
    let store = Store::open(&url, &opts).await.with_context(|| format!("cannot open database {}", redact_url(&url)))?;
    let generated = std::sync::Mutex::new(None::<String>);
    let password = settings.bootstrap_admin_password.clone();
    let key = settings.bootstrap_admin_token.as_ref().map(|t| NewApiKey {
        user_id: String::new(),
        name: "bootstrap".into(),
        token_hash: auth::hash_token(t),
        scopes: "read write admin".into(),
        expires_at: None,
        namespaces: String::new(),
        bootstrap: true,
    });
    // Without a configured token, the first start also creates an admin key (90 days), so a
    // newcomer can use the API and the CLI at once.
    let first_token = settings.bootstrap_admin_token.is_none().then(auth::generate_token);
    let first_key = first_token.as_ref().map(|t| NewApiKey {
        user_id: String::new(),
        name: "first-start".into(),
        token_hash: auth::hash_token(t),
        scopes: "read write admin".into(),
        expires_at: Some(store.now() + FIRST_KEY_DAYS * 86_400_000),
        namespaces: String::new(),
        bootstrap: true,
    });
    let outcome = store
        .bootstrap_admin(
            || {
                let pw = password.unwrap_or_else(|| {
                    let pw = auth::generate_password();
                    if let Ok(mut g) = generated.lock() {
                        *g = Some(pw.clone());
                    }
                    pw
                });
                auth::hash_password(&pw).unwrap_or_default()
            },
            key,
            first_key,
        )
        .await?;
    if outcome.created_admin {
        tracing::info!("created the administrator account 'admin'");
        if let Ok(Some(pw)) = generated.lock().map(|g| g.clone()) {
            // Shown once, on the terminal only; never written to the log.
            eprintln!("\n  Created user 'admin' with password: {pw}");
        }
        if let (true, Some(t)) = (outcome.added_first_start_key, &first_token) {
            eprintln!("  Admin API key (valid {FIRST_KEY_DAYS} days): {t}");
        }
        if outcome.added_first_start_key || generated.lock().is_ok_and(|g| g.is_some()) {
            eprintln!("  They are shown only this once.\n");
        }
    }
    if outcome.added_key {
        tracing::info!("added the bootstrap admin API key");
    }
    Ok(store)
}

#[cfg(unix)]
fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    } else if !dir.is_dir() {
        anyhow::bail!("data dir {} exists and is not a directory", dir.display());
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))
}

/// Binds a listening socket for axum-server.
fn bind(addr: &str, setting: &str) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} ({setting})"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Runs the server until SIGINT or SIGTERM. Then `/readyz` answers 503 for
/// `shutdown_drain_secs` while requests are still served (load balancers move away), new
/// connections stop, and in-flight requests get `shutdown_grace_secs` to finish.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    // Certificates first: a bad file stops the start before anything is opened.
    let tls = match (&settings.tls_cert_file, &settings.tls_key_file) {
        (Some(cert), Some(key)) => {
            crate::tls::warn_if_key_readable(key);
            Some((
                RustlsConfig::from_config(Arc::new(crate::tls::server_config(cert, key)?)),
                cert.clone(),
                key.clone(),
            ))
        }
        _ => None,
    };
    let mut signals = Signals::catch();
    let listener = bind(&settings.listen, "listen, CAIRN_LISTEN")?;
    let redirect = match &settings.tls_redirect_listen {
        Some(addr) => Some(bind(addr, "tls_redirect_listen, CAIRN_TLS_REDIRECT_LISTEN")?),
        None => None,
    };
    let store = open_store(&settings).await?;
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    let drain = Duration::from_secs(settings.shutdown_drain_secs);
    let reload_every = Duration::from_secs(settings.tls_reload_secs);
    let state = AppState::new(store.clone(), settings).await?;
    let sweeper = tokio::spawn(sweep_forever(state.clone()));
    let checkpointer = tokio::spawn(checkpoint_forever(state.clone()));
    let pruner = tokio::spawn(prune_forever(state.clone()));
    let webhook_worker = crate::webhooks::Worker::spawn(
        state.store.clone(),
        crate::webhooks::WorkerConfig::from_settings(&state.settings),
    );
    let app = build_router(state.clone());
    let addr = listener.local_addr()?;
    let handle = Handle::<SocketAddr>::new();
    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    // TCP_NODELAY on every connection: a response written in pieces (headers, then a streamed
    // body) must not wait for the client's delayed ACK, 40 ms on Linux, on a reused connection.
    let (mut server, reloader) = match tls {
        Some((config, cert, key)) => {
            let reloader = tokio::spawn(crate::tls::reload_forever(config.clone(), cert, key, reload_every));
            let server = axum_server::tls_rustls::from_tcp_rustls(listener, config)?
                .map(|tls| tls.acceptor(NoDelayAcceptor::new()))
                .handle(handle.clone());
            (tokio::spawn(server.serve(make_service)), Some(reloader))
        }
        None => {
            let server = axum_server::from_tcp(listener)?.acceptor(NoDelayAcceptor::new()).handle(handle.clone());
            (tokio::spawn(server.serve(make_service)), None)
        }
    };
    let redirector = match redirect {
        Some(l) => {
            let redirect_addr = l.local_addr()?;
            let app = crate::tls::redirect_router(addr.port());
            tracing::info!(%redirect_addr, "redirecting plain HTTP to HTTPS");
            let server = axum_server::from_tcp(l)?.acceptor(NoDelayAcceptor::new()).handle(handle.clone());
            Some(tokio::spawn(server.serve(app.into_make_service())))
        }
        None => None,
    };
    let scheme = if reloader.is_some() { "https" } else { "http" };
    tracing::info!(
        %addr,
        backend = ?store.backend(),
        startup_ms = started.elapsed().as_millis() as u64,
        "cairn is ready: {scheme}://{addr}"
    );
    tokio::select! {
        res = &mut server => { res??; }
        () = signals.next() => {
            state.draining.store(true, std::sync::atomic::Ordering::Relaxed);
            if !drain.is_zero() {
                tracing::info!(drain_secs = drain.as_secs(), "shutting down: /readyz answers 503; still serving while load balancers move away");
                tokio::select! {
                    () = tokio::time::sleep(drain) => {}
                    // A second signal skips the rest of the drain.
                    () = signals.next() => {}
                }
            }
            tracing::info!(grace_secs = grace.as_secs(), "shutting down: finishing in-flight requests");
            handle.graceful_shutdown(Some(grace));
            match tokio::time::timeout(grace + Duration::from_secs(1), &mut server).await {
                Ok(res) => { res??; }
                Err(_) => tracing::warn!("grace period over; closing remaining connections"),
            }
        }
    }
    for task in [Some(sweeper), Some(checkpointer), Some(pruner), reloader].into_iter().flatten() {
        task.abort();
    }
    if let Some(r) = redirector {
        r.abort();
    }
    // Deliveries in flight finish (each within its timeout); the rest wait in the log.
    webhook_worker.stop().await;
    // The chain's last events are vouched for by a signature before the process ends.
    if let Err(e) = state.store.checkpoint_audit_chain(&state.signing_key).await {
        tracing::warn!(error = %e, "could not sign the final audit checkpoint");
    }
    // The last second of rate-limit counts reaches the other replicas (PostgreSQL).
    if let Err(e) = state.rate_limits.flush().await {
        tracing::warn!(error = %e, "could not flush the rate-limit counters");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Removes expired uploads and abandoned parts once a minute.
async fn sweep_forever(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Err(e) = crate::uploads::sweep(&state).await {
            tracing::warn!(error = %e.message, "upload sweep failed");
        }
    }
}

/// Signs a checkpoint of the audit chain every `audit_checkpoint_secs` (when it moved).
async fn checkpoint_forever(state: AppState) {
    let secs = state.settings.audit_checkpoint_secs;
    if secs == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match state.store.checkpoint_audit_chain(&state.signing_key).await {
            Ok(Some(cp)) => tracing::debug!(seq = cp.seq, "audit checkpoint"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not sign an audit checkpoint"),
        }
    }
}

/// Applies the audit retention rules every `audit_prune_secs` (first after one interval).
async fn prune_forever(state: AppState) {
    let secs = state.settings.audit_prune_secs;
    let Ok(policy) = state.settings.audit_retention_policy() else { return };
    if secs == 0 {
        return;
    }
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(secs), Duration::from_secs(secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match state.store.prune_audit(&cairn_store::AuditContext::system(), &policy, false).await {
            Ok(out) if out.changed() => tracing::info!(
                removed = out.record.removed_events,
                pruned = out.record.pruned_details.iter().map(|p| p.events).sum::<u64>(),
                anchor = out.record.anchor_seq,
                "audit retention applied"
            ),
            Ok(out) => {
                if let Some(note) = out.note {
                    tracing::info!(note, "audit retention: nothing removed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not apply the audit retention"),
        }
    }
}

/// SIGINT and SIGTERM, caught from the moment this is made. Made before the server starts
/// answering: a signal that comes while it starts (an orchestrator stopping a pod that just
/// became ready) then begins an orderly shutdown instead of killing the process outright,
/// which is the default action until a handler is installed.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn catch() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self { term: signal(SignalKind::terminate()).ok(), int: signal(SignalKind::interrupt()).ok() }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = one(&mut self.term) => {},
                () = one(&mut self.int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
