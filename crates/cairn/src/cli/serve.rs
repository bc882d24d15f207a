//! `cairn serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_server::{LogFormat, Settings, SettingsOverrides};
use clap::{Args, ValueEnum};

/// Flags of `cairn serve`; each also has a `CAIRN_*` variable and a `cairn.toml` key.
#[derive(Args, Debug)]
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
