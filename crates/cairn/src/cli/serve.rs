//! `cairn serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_server::{LogFormat, Settings, SettingsOverrides};
use clap::{Args, ValueEnum};

/// Flags of `cairn serve`; each also has a `CAIRN_*` variable and a `cairn.toml` key.
#[derive(Args, Debug)]
#[command(after_help = "Plain HTTP is refused on addresses other machines can reach: give a certificate \
(--tls-cert-file, --tls-key-file), or --insecure-http behind a TLS-terminating proxy. SIGHUP reloads the \
certificate; SIGTERM drains (CAIRN_SHUTDOWN_DRAIN_SECS) and then finishes in-flight requests \
(CAIRN_SHUTDOWN_GRACE_SECS). Every setting: docs/DEPLOYMENT.md.")]
pub struct ServeArgs {
    /// Address to listen on [env: CAIRN_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long)]
    listen: Option<String>,
    /// Directory for the SQLite database and local files [env: CAIRN_DATA_DIR] [default: ./cairn-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://USER@HOST/DB [env: CAIRN_DATABASE_URL]
    #[arg(long)]
    database_url: Option<String>,
    /// Settings file [env: CAIRN_CONFIG] [default: ./cairn.toml when present]
    #[arg(long, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    /// Log format [env: CAIRN_LOG_FORMAT] [default: text]
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Log filter such as `info` or `cairn_server=debug` [env: CAIRN_LOG] [default: info]
    #[arg(long)]
    log: Option<String>,
    /// PEM certificate chain: serve HTTPS (TLS 1.2/1.3) [env: CAIRN_TLS_CERT_FILE]
    #[arg(long, requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of the certificate [env: CAIRN_TLS_KEY_FILE]
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address, because a TLS-terminating proxy is in front [env: CAIRN_INSECURE_HTTP]
    #[arg(long)]
    insecure_http: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

/// Runs the server on a multi-threaded runtime.
pub fn run(args: ServeArgs) -> ExitCode {
    let flags = SettingsOverrides {
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
        log_format: args.log_format.map(|f| match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }),
        log: args.log,
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        insecure_http: args.insecure_http.then_some(true),
        ..SettingsOverrides::default()
    };
    let settings = match Settings::load(&flags, args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return super::usage(e),
    };
    cairn_server::serve::init_logging(&settings);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(cairn_server::serve::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
