//! Structured logs for both binaries: human-readable text by default, JSON lines on request.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Logging settings, flattened into each binary's configuration.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Log filter in `tracing` EnvFilter syntax, e.g. `info,parley_api=debug`.
    #[arg(long = "log", env = "PARLEY_LOG", default_value = "info")]
    pub filter: String,
    /// Log line format.
    #[arg(long, env = "PARLEY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops), which
/// in-process tests rely on.
pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_new(&args.filter).unwrap_or_else(|error| {
        eprintln!("invalid PARLEY_LOG filter {:?} ({error}); using \"info\"", args.filter);
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}
