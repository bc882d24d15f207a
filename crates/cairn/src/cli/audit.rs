//! `cairn audit`: the hash-chained audit log.
//!
//! - `list`, `status`, `checkpoint` and `export` talk to a server with the stored credential.
//! - `verify --file` checks an export offline; `verify` without `--file` checks the live
//!   database directly, with the settings of `cairn serve`, opening it without migrating or
//!   writing anything.
//!
//! Verification trusts only the keys it is given with `--public-key`. Without them it falls
//! back on keys that sit next to what they vouch for (the server's key file, the database's
//! key table, the export's header) and says so: whoever could rewrite the log could have
//! replaced those keys too.

use std::io::{BufRead, BufReader, IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_api_types as api;
use cairn_audit::export::{Line, MAX_LINE, ReadError, Trailer};
use cairn_audit::{PublicKey, Report, SigningKey};
use cairn_server::{Settings, SettingsOverrides};
use cairn_store::{DbOptions, Store};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::UsageError;
use crate::progress::human_bytes;
use crate::{table, tree};

/// `cairn audit …`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// List audit events, oldest first
    #[command(after_help = "Examples:\n  cairn audit list --action model.create --since 2026-01-01T00:00:00Z\n  \
                            cairn audit list --actor user:alice --all --json")]
    List(ListArgs),
    /// Download the chain as JSON Lines that `cairn audit verify --file` checks offline
    #[command(after_help = "Events outside the filters are kept in the file with their details withheld, so the \
                            chain stays whole and verifiable.\n\nExamples:\n  cairn audit export -o audit.jsonl\n  \
                            cairn audit export --target model:team/x --since 2026-01-01T00:00:00Z -o team-x.jsonl")]
    Export(ExportArgs),
    /// Check the chain: an export file, or the live database of a server
    #[command(after_help = "Exit status: 0 intact, 1 broken (or signed by a key that is not trusted), 2 unreadable \
                            input.\n\nExamples:\n  cairn audit verify --file audit.jsonl --public-key cairn-signing.pub\n  \
                            cairn audit verify --data-dir /var/lib/cairn --public-key cairn-signing.pub\n  \
                            cairn audit verify --database-url postgres://cairn@db/cairn --json")]
    Verify(VerifyArgs),
    /// Sign a checkpoint of the chain's head now
    #[command(after_help = "Example:\n  cairn audit checkpoint")]
    Checkpoint {
        /// Print the checkpoint as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Where the chain stands: its head, anchor, newest checkpoint and signing key
    #[command(after_help = "Example:\n  cairn audit status --json")]
    Status {
        /// Print the status as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Reconstruct how a version was decided — creation, submissions, policy findings,
    /// evaluations, reviews, exceptions, promotion — from the verified audit chain alone
    #[command(after_help = "The version's events are exported, the export is verified (pin the key with \
                            --public-key), and only then read. With --file, an export made earlier is used \
                            offline.\n\nExit status: 0 explained, 1 the chain does not verify, 2 bad input.\n\n\
                            Examples:\n  cairn audit explain risk/fraud:3 --public-key cairn-signing.pub\n  \
                            cairn audit explain risk/fraud@production --json\n  \
                            cairn audit explain risk/fraud:3 --file audit.jsonl --public-key cairn-signing.pub")]
    Explain(ExplainArgs),
    /// A compliance report over a period: activity, approvals, promotions, policy violations,
    /// exceptions and access, as Markdown or JSON
    #[command(
        after_help = "Examples:\n  cairn audit report --since 2026-07-01T00:00:00Z --until 2026-10-01T00:00:00Z \
                            -o q3.md\n  cairn audit report --format json --since 2026-01-01T00:00:00Z"
    )]
    Report(ReportArgs),
    /// Apply the retention rules now (administrators; the server also does so daily)
    #[command(after_help = "Events past their action's retention lose their details; the start of the chain \
                            older than the longest retention is removed up to a signed checkpoint, which becomes \
                            the anchor. The pruning is itself an audit event.\n\nExamples:\n  \
                            cairn audit prune --dry-run\n  cairn audit prune --json")]
    Prune {
        /// Only report what would be pruned
        #[arg(long)]
        dry_run: bool,
        /// Print the result as JSON on stdout
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct ExplainArgs {
    /// The version: ns/name:N, ns/name@alias or ns/name:1.4.2 (a number with --file)
    #[arg(value_name = "VERSION")]
    reference: String,
    /// Read this export (`-` for stdin) instead of asking the server
    #[arg(long, value_name = "FILE|-")]
    file: Option<PathBuf>,
    /// Trust checkpoints signed by this key (SPKI PEM, or the raw key in base64 or hex); repeatable
    #[arg(long = "public-key", value_name = "FILE")]
    public_keys: Vec<PathBuf>,
    /// Print the verification and the explanation as JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// Start of the period (RFC 3339, inclusive; default: the start of the chain)
    #[arg(long, value_parser = rfc3339)]
    since: Option<String>,
    /// End of the period (RFC 3339, exclusive; default: now)
    #[arg(long, value_parser = rfc3339)]
    until: Option<String>,
    /// markdown or json
    #[arg(long, default_value = "markdown", value_parser = ["markdown", "json"])]
    format: String,
    /// Write the report here instead of stdout
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

/// The event filters shared by `list` and `export`.
#[derive(Args, Debug, Default)]
struct Filters {
    /// Only events of this actor (user:alice, service:ci, system)
    #[arg(long)]
    actor: Option<String>,
    /// Only this action (model.create, version.delete, …)
    #[arg(long)]
    action: Option<String>,
    /// Only this target (model:team/x, version:team/x:3, user:bob)
    #[arg(long)]
    target: Option<String>,
    /// Only this outcome (success, denied, failure)
    #[arg(long)]
    outcome: Option<String>,
    /// Only events at or after this time (RFC 3339, e.g. 2026-01-31T12:00:00Z)
    #[arg(long, value_parser = rfc3339)]
    since: Option<String>,
    /// Only events before this time (RFC 3339)
    #[arg(long, value_parser = rfc3339)]
    until: Option<String>,
}

impl Filters {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("actor", &self.actor),
            ("action", &self.action),
            ("target", &self.target),
            ("outcome", &self.outcome),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

fn rfc3339(s: &str) -> Result<String, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|_| s.to_owned())
        .map_err(|e| format!("not an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}"))
}

#[derive(Args, Debug)]
struct ListArgs {
    #[command(flatten)]
    filters: Filters,
    /// Events per page (1–1000)
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: Option<u16>,
    /// Start at this page (the token printed after the previous one)
    #[arg(long, conflicts_with = "all")]
    page_token: Option<String>,
    /// Follow the pages to the last event
    #[arg(long)]
    all: bool,
    /// Print the events as JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Where to write the export; `-` for stdout
    #[arg(long, short = 'o', value_name = "FILE|-", default_value = "-")]
    output: PathBuf,
    #[command(flatten)]
    filters: Filters,
    /// First event to export in full
    #[arg(long, value_name = "N")]
    from_seq: Option<i64>,
    /// Last event to export in full
    #[arg(long, value_name = "N")]
    to_seq: Option<i64>,
    /// No progress bar
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// Verify this export (`-` for stdin) instead of the live database
    #[arg(long, value_name = "FILE|-")]
    file: Option<PathBuf>,
    /// Trust checkpoints signed by this key (SPKI PEM, or the raw key in base64 or hex); repeatable
    #[arg(long = "public-key", value_name = "FILE")]
    public_keys: Vec<PathBuf>,
    /// Print the report as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Without --file: directory of the SQLite database [env: CAIRN_DATA_DIR] [default: ./cairn-data]
    #[arg(long, conflicts_with = "file")]
    data_dir: Option<PathBuf>,
    /// Without --file: sqlite://PATH or postgres://USER@HOST/DB [env: CAIRN_DATABASE_URL]
    #[arg(long, conflicts_with = "file")]
    database_url: Option<String>,
    /// Without --file: settings file [env: CAIRN_CONFIG] [default: ./cairn.toml when present]
    #[arg(long, env = "CAIRN_CONFIG", conflicts_with = "file")]
    config: Option<PathBuf>,
}

/// Runs `cairn audit`.
pub async fn run(args: AuditArgs) -> ExitCode {
    let r = match args.command {
        AuditCommand::List(a) => list(a).await.map(|()| ExitCode::SUCCESS),
        AuditCommand::Export(a) => export(a).await.map(|()| ExitCode::SUCCESS),
        AuditCommand::Verify(a) => verify(a).await,
        AuditCommand::Checkpoint { json } => checkpoint(json).await.map(|()| ExitCode::SUCCESS),
        AuditCommand::Status { json } => status(json).await.map(|()| ExitCode::SUCCESS),
        AuditCommand::Explain(a) => explain(a).await,
        AuditCommand::Report(a) => report(a).await.map(|()| ExitCode::SUCCESS),
        AuditCommand::Prune { dry_run, json } => prune(dry_run, json).await.map(|()| ExitCode::SUCCESS),
    };
    r.unwrap_or_else(|e| super::fail(&e))
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let client = super::client()?;
    let mut pairs = args.filters.pairs();
    if let Some(l) = args.limit {
        pairs.push(("limit", l.to_string()));
    }
    let mut token = args.page_token.clone();
    let mut events = Vec::new();
    let next = loop {
        let mut q: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if let Some(t) = &token {
            q.push(("page_token", t));
        }
        let page = client.list_audit_events(&q).await?;
        events.extend(page.events);
        match page.next_page_token {
            Some(t) if args.all => token = Some(t),
            other => break other,
        }
    };
    if args.json {
        return super::print_json(&api::AuditEventList { events, next_page_token: next });
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.occurred_at.clone(),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                e.outcome.clone(),
            ]
        })
        .collect();
    print!("{}", table::render(&["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME"], &rows));
    if let Some(t) = next {
        eprintln!("more events: add --page-token {t} (or --all)");
    }
    Ok(())
}

async fn status(json: bool) -> anyhow::Result<()> {
    let chain = super::client()?.audit_chain().await?;
    if json {
        return super::print_json(&chain);
    }
    println!("head:            event {} {}", chain.head_seq, chain.head_hash);
    if chain.anchor_seq > 0 {
        println!("anchor:          event {} {} (earlier events were pruned)", chain.anchor_seq, chain.anchor_hash);
    } else {
        println!("anchor:          the genesis (no event was pruned)");
    }
    match &chain.last_checkpoint {
        Some(cp) => {
            println!("last checkpoint: event {} signed {} by {}", cp.seq, time_of(cp.signed_at), cp.key_id);
            println!("unsigned tail:   {} events", chain.head_seq - cp.seq);
        }
        None => println!("last checkpoint: none yet"),
    }
    println!("signing key:     {}", chain.signing_key_id);
    Ok(())
}

async fn checkpoint(json: bool) -> anyhow::Result<()> {
    let cp = super::client()?.create_checkpoint().await.map_err(|e| match e.status() {
        Some(409) => anyhow::Error::new(e).context("nothing to sign"),
        _ => anyhow::Error::new(e),
    })?;
    if json {
        return super::print_json(&cp);
    }
    println!("Checkpoint at event {}, head {}, signed {} by {}", cp.seq, cp.head, time_of(cp.signed_at), cp.key_id);
    Ok(())
}

/// Milliseconds since the epoch as RFC 3339.
fn time_of(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// What the export stream held, read as it goes by: the kinds of its lines and its last
/// line (the end line of a complete export).
#[derive(Debug, Default)]
struct Tally {
    bytes: u64,
    events: u64,
    redacted: u64,
    checkpoints: u64,
    line: Vec<u8>,
    last: Vec<u8>,
}

/// Longest line kept to be parsed at the end (the end line is short; event lines need only
/// their first bytes to be counted).
const KEEP: usize = 64 * 1024;

impl Tally {
    fn feed(&mut self, mut chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        while !chunk.is_empty() {
            let (part, rest, ended) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &chunk[chunk.len()..], false),
            };
            let room = KEEP.saturating_sub(self.line.len());
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            if ended {
                self.end_line();
            }
            chunk = rest;
        }
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if line.starts_with(b"{\"event\"") {
            self.events += 1;
        } else if line.starts_with(b"{\"redacted\"") {
            self.redacted += 1;
        } else if line.starts_with(b"{\"checkpoint\"") {
            self.checkpoints += 1;
        }
        self.last = line;
    }

    /// The end line, if the stream ended with one.
    fn finish(&mut self) -> Option<Trailer> {
        self.end_line();
        match serde_json::from_slice(&self.last) {
            Ok(Line::End(t)) => Some(t),
            _ => None,
        }
    }
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let client = super::client()?;
    let mut pairs = args.filters.pairs();
    if let Some(n) = args.from_seq {
        pairs.push(("from_seq", n.to_string()));
    }
    if let Some(n) = args.to_seq {
        pairs.push(("to_seq", n.to_string()));
    }
    let to_stdout = args.output.as_os_str() == "-";
    // Written beside the destination and renamed at the end: a cut download never has the
    // destination's name.
    let partial = (!to_stdout).then(|| tree::partial_path(&args.output));
    let mut out: Box<dyn std::io::Write> = match &partial {
        // Owner-only: an export holds addresses and user agents.
        Some(p) => Box::new(std::io::BufWriter::new(private_file(p)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} exporting {bytes} {bytes_per_sec} {msg}")
                .expect("the template is a constant"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    };
    let result = async {
        let q: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut stream = client.audit_export(&q).await?;
        let mut tally = Tally::default();
        while let Some(chunk) = stream.chunk().await? {
            out.write_all(&chunk).context("cannot write the export")?;
            tally.feed(&chunk);
            bar.set_position(tally.bytes);
        }
        out.flush().context("cannot write the export")?;
        drop(out);
        let Some(trailer) = tally.finish() else {
            bail!("the export ended without its end line: the download was cut short; run it again");
        };
        if let Some(p) = &partial {
            let f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            f.sync_all().with_context(|| format!("cannot sync {}", p.display()))?;
            std::fs::rename(p, &args.output).with_context(|| format!("cannot move {} into place", p.display()))?;
        }
        Ok((tally, trailer))
    }
    .await;
    bar.finish_and_clear();
    let (tally, trailer) = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(p) = &partial {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };
    let line = format!(
        "Exported {} events ({} with details withheld) and {} checkpoint(s) up to event {} (head {}), {} to {}",
        tally.events + tally.redacted,
        tally.redacted,
        tally.checkpoints,
        trailer.last_seq,
        trailer.head,
        human_bytes(tally.bytes),
        if to_stdout { "stdout".to_owned() } else { args.output.display().to_string() }
    );
    if to_stdout {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    Ok(())
}

/// Reads the `--public-key` files.
pub(crate) fn read_public_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    paths.iter().map(|p| PublicKey::read(p).map_err(|e| UsageError(format!("--public-key: {e}")).into())).collect()
}

/// Says on stderr that verification trusts a key that was not pinned.
pub(crate) fn warn_not_pinned(source: &str, keys: &[PublicKey]) {
    let ids: Vec<String> = keys.iter().map(PublicKey::key_id).collect();
    eprintln!(
        "warning: the signing key is not pinned: trusting {} from {source}; a forger who could change what is \
         verified could have replaced it too. Pass --public-key FILE with a copy of the key kept apart from the server.",
        if ids.is_empty() { "no key".to_owned() } else { ids.join(", ") }
    );
}

async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let pinned = read_public_keys(&args.public_keys)?;
    let report = match &args.file {
        Some(file) => verify_file(file, pinned)?,
        None => verify_database(&args, pinned).await?,
    };
    if args.json {
        super::print_json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn verify_file(file: &Path, pinned: Vec<PublicKey>) -> anyhow::Result<Report> {
    verify_file_observing(file, pinned, &mut |_| {})
}

/// Verifies the export in `file` (`-`: stdin) against `pinned`, or — with none pinned — the
/// keys its header names (with a warning), handing every verified event to `observe`.
fn verify_file_observing(
    file: &Path,
    pinned: Vec<PublicKey>,
    observe: &mut dyn FnMut(&cairn_audit::AuditRecord),
) -> anyhow::Result<Report> {
    let mut input: Box<dyn BufRead + Send> = if file.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(
            std::fs::File::open(file).map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?,
        ))
    };
    let unreadable = |e: ReadError| UsageError(format!("{} is not a readable export: {e}", file.display()));
    let trusted = if pinned.is_empty() {
        // The header names the keys: read it first, then hand it back to the verifier.
        let mut first = Vec::new();
        input
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut first)
            .map_err(|e| unreadable(ReadError::Io(e)))?;
        let keys: Vec<PublicKey> = match serde_json::from_slice(&first) {
            Ok(Line::Header(h)) => h.public_keys.iter().filter_map(|k| PublicKey::parse(k).ok()).collect(),
            _ => Vec::new(),
        };
        warn_not_pinned("the export's header", &keys);
        input = Box::new(std::io::Cursor::new(first).chain(input));
        keys
    } else {
        pinned
    };
    cairn_audit::export::verify_export_observing(input, trusted, observe).map_err(|e| unreadable(e).into())
}

/// Creates (or replaces) `p` readable by its owner only.
fn private_file(p: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let _ = std::fs::remove_file(p);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    Ok(opts.open(p).map_err(|e| UsageError(format!("cannot write {}: {e}", p.display())))?)
}

/// The file of a `sqlite:` URL (`None` for other databases and in-memory ones).
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

async fn verify_database(args: &VerifyArgs, pinned: Vec<PublicKey>) -> anyhow::Result<Report> {
    let flags = SettingsOverrides {
        data_dir: args.data_dir.clone(),
        database_url: args.database_url.clone(),
        ..SettingsOverrides::default()
    };
    let settings = Settings::load(&flags, args.config.as_deref()).map_err(|e| UsageError(e.to_string()))?;
    let url = settings.database_url();
    let shown = cairn_server::settings::redact_url(&url);
    if let Some(file) = sqlite_file(&url)
        && !file.is_file()
    {
        bail!(UsageError(format!(
            "there is no database at {}: give the --data-dir or --database-url the server runs with \
             (verification never creates one)",
            file.display()
        )));
    }
    let store = Store::open_existing(&url, &DbOptions { max_connections: 2, ..DbOptions::default() })
        .await
        .with_context(|| format!("cannot open database {shown}"))?;
    let result = async {
        let trusted = if pinned.is_empty() {
            let key_file = settings.signing_key_path();
            match std::fs::read_to_string(&key_file).ok().and_then(|t| SigningKey::from_pem(&t).ok()) {
                Some(key) => {
                    let keys = vec![key.public()];
                    warn_not_pinned(&format!("the server's key file {}", key_file.display()), &keys);
                    keys
                }
                None => {
                    let known = store.signing_keys().await.context("cannot read the signing keys")?;
                    let keys: Vec<PublicKey> =
                        known.iter().filter_map(|k| PublicKey::parse(&k.public_key).ok()).collect();
                    warn_not_pinned("the database's signing_keys table", &keys);
                    keys
                }
            }
        } else {
            pinned
        };
        store.verify_audit_chain(trusted).await.with_context(|| format!("cannot read the audit chain of {shown}"))
    }
    .await;
    store.close().await;
    result
}

fn print_report(r: &Report) {
    let range = match r.first_seq {
        Some(first) => format!("events {first}–{}", r.last_seq),
        None => "no events".to_owned(),
    };
    println!("events:          {} ({range}), {} with details withheld, {} erased", r.events, r.redacted, r.erased);
    match &r.last_checkpoint {
        Some(cp) => println!(
            "checkpoints:     {} verified, the last at event {} signed {} by {}",
            r.checkpoints,
            cp.seq,
            time_of(cp.signed_at),
            cp.key_id
        ),
        None => println!("checkpoints:     none"),
    }
    println!("unsigned tail:   {} events after the last checkpoint", r.unsigned_tail);
    println!("head:            event {} {}", r.last_seq, r.head);
    match &r.first_break {
        None => {
            println!("intact");
            if r.last_checkpoint.is_none() && r.events > 0 {
                eprintln!(
                    "warning: no signed checkpoint covers these events: the chain is consistent, but one who can \
                     rewrite the whole log could have rewritten it consistently"
                );
            }
        }
        Some(b) => {
            let kind =
                serde_json::to_value(b.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            println!("BROKEN at event {} ({kind}): {}", b.seq, b.message);
        }
    }
}

async fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let r = cairn_core::VersionRef::parse(&args.reference).map_err(|e| UsageError(e.to_string()))?;
    let pinned = read_public_keys(&args.public_keys)?;
    // The export to read: the given file, or the version's events fetched into a private
    // temporary file (the rest of the chain between two checkpoints comes redacted).
    let (path, target, _tmp) = match &args.file {
        Some(file) => {
            let cairn_core::VersionSelector::Number(n) = r.selector else {
                bail!(UsageError("with --file, give the version by number (ns/name:3)".into()));
            };
            (file.clone(), format!("version:{}:{n}", r.model), None)
        }
        None => {
            let client = super::client()?;
            let v = client.get_version(&r.model.to_string(), &r.selector.to_string()).await?;
            let target = format!("version:{}:{}", r.model, v.version);
            let tmp = tempfile::NamedTempFile::new().context("cannot create a temporary file")?;
            let mut out = std::io::BufWriter::new(tmp.reopen().context("cannot open the temporary file")?);
            let mut stream = client.audit_export(&[("target", target.as_str())]).await?;
            while let Some(chunk) = stream.chunk().await? {
                out.write_all(&chunk).context("cannot write the temporary file")?;
            }
            out.flush().context("cannot write the temporary file")?;
            (tmp.path().to_owned(), target, Some(tmp))
        }
    };
    let mut explanation = cairn_audit::report::Explanation::new(target.clone());
    let report = verify_file_observing(&path, pinned, &mut |rec| explanation.add(rec))?;
    if !report.ok() {
        if args.json {
            super::print_json(&serde_json::json!({ "verification": report, "explanation": null }))?;
        } else {
            print_report(&report);
            eprintln!("The chain does not verify: no explanation is given from it.");
        }
        return Ok(ExitCode::from(1));
    }
    if explanation.events == 0 {
        bail!(UsageError(format!("the export holds no events about {}", target.trim_start_matches("version:"))));
    }
    if args.json {
        super::print_json(&serde_json::json!({ "verification": report, "explanation": explanation }))?;
    } else {
        print!("{}", explanation.to_markdown());
        let signed = report.last_checkpoint.as_ref().map_or_else(
            || "no signed checkpoint".to_owned(),
            |cp| format!("signed checkpoint at event {} by {}", cp.seq, cp.key_id),
        );
        println!("\n---\nVerified: {} events of the chain up to event {}, {signed}.", report.events, report.last_seq);
    }
    Ok(ExitCode::SUCCESS)
}

async fn report(args: ReportArgs) -> anyhow::Result<()> {
    let client = super::client()?;
    let text = client.audit_report(args.since.as_deref(), args.until.as_deref(), &args.format).await?;
    match &args.output {
        Some(p) => {
            std::fs::write(p, &text).map_err(|e| UsageError(format!("cannot write {}: {e}", p.display())))?;
            println!("Wrote the report to {}", p.display());
        }
        None => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
        }
    }
    Ok(())
}

async fn prune(dry_run: bool, json: bool) -> anyhow::Result<()> {
    let client = super::client()?;
    let out = client.audit_prune(dry_run).await?;
    if json {
        return super::print_json(&out);
    }
    let pruned: u64 = out.pruned_details.iter().map(|p| p.events).sum();
    let verb = if out.dry_run { "Would prune" } else { "Pruned" };
    println!(
        "{verb} the details of {pruned} event(s) and remove {} event(s); the chain starts after event {}",
        out.removed_events, out.anchor_seq
    );
    for p in &out.pruned_details {
        println!("  {}: {} event(s) before {}", p.action, p.events, p.before);
    }
    if let Some(note) = &out.note {
        println!("Note: {note}");
    }
    let rules: Vec<String> = out.retention.iter().map(|r| format!("{}={}d", r.actions, r.days)).collect();
    println!("Retention: {}", rules.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_counts_lines_across_chunks_and_finds_the_end_line() {
        let text = "{\"header\":{}}\n{\"event\":{}}\n{\"redacted\":{}}\n{\"checkpoint\":{}}\n\
                    {\"end\":{\"events\":2,\"last_seq\":2,\"head\":\"ab\"}}\n";
        for size in [1, 3, 7, 1000] {
            let mut t = Tally::default();
            for c in text.as_bytes().chunks(size) {
                t.feed(c);
            }
            let end = t.finish().expect("the end line");
            assert_eq!((t.events, t.redacted, t.checkpoints, t.bytes), (1, 1, 1, text.len() as u64));
            assert_eq!((end.events, end.last_seq, end.head.as_str()), (2, 2, "ab"));
        }
        let mut cut = Tally::default();
        cut.feed(&text.as_bytes()[..text.len() - 10]);
        assert!(cut.finish().is_none());
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(sqlite_file("sqlite:///var/lib/cairn/cairn.db"), Some(PathBuf::from("/var/lib/cairn/cairn.db")));
        assert_eq!(sqlite_file("sqlite://./d/cairn.db?mode=rwc"), Some(PathBuf::from("./d/cairn.db")));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }
}
