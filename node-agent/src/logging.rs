//! The agent's log: plain text (coloured only on a terminal) or one JSON
//! object per line, on stderr, under a filter that SIGHUP replaces with the
//! one in `--log-level-file`.
//!
//! Why a signal and not an endpoint, as the masters' `PUT /debug/flags/v`:
//! the agent serves nothing authenticated of its own (its HTTP port is plain
//! /metrics and /healthz; logs and exec reach it on streams the masters open
//! over its own connection). A signal can be sent only by root or the
//! agent's own user, and the file is as safe as its permissions, so this
//! opens no new door. The master has a module of the same shape
//! (`control-plane/src/logging.rs`); no crate both binaries use is a place
//! for a log subscriber.

use std::io::IsTerminal;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

const DEFAULT_FILTER: &str = "info";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, target, fields (with the
    /// message) and spans.
    Json,
}

/// The log flags, global to every subcommand.
#[derive(clap::Args)]
pub struct Args {
    /// How log lines are written to stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "SKIFF_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: Format,
    /// The starting filter: a level or tracing directives, as "debug" or
    /// "info,node_agent::session=debug" (default: $RUST_LOG, else "info").
    #[arg(long = "log-level", visible_alias = "v", global = true)]
    level: Option<String>,
}

/// The live filter, replaced by [`reload_on_hangup`].
pub type Filter = reload::Handle<EnvFilter, Registry>;

fn parse(directive: &str) -> anyhow::Result<EnvFilter> {
    anyhow::ensure!(!directive.trim().is_empty(), "the log filter is empty");
    EnvFilter::builder()
        .parse(directive.trim())
        .map_err(|e| anyhow::anyhow!("bad log filter {directive:?}: {e}"))
}

/// Install the process's subscriber. Call once, before anything logs.
pub fn init(args: &Args) -> anyhow::Result<Filter> {
    let directive = match (&args.level, std::env::var("RUST_LOG")) {
        (Some(d), _) => d.clone(),
        (None, Ok(d)) if !d.trim().is_empty() => d,
        _ => DEFAULT_FILTER.to_string(),
    };
    let (filter, handle) = reload::Layer::new(parse(&directive)?);
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let json = args.log_format == Format::Json;
    tracing_subscriber::registry()
        .with(filter)
        .with((!json).then(|| {
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
        }))
        .with(json.then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
        }))
        .init();
    Ok(handle)
}

/// Set the filter from `file`; a missing file or a bad directive changes
/// nothing (and says why).
fn apply(file: &std::path::Path, filter: &Filter) {
    let result = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))
        .and_then(|text| Ok((parse(&text)?, text.trim().to_string())))
        .and_then(|(f, text)| Ok((filter.reload(f)?, text)));
    match result {
        Ok(((), text)) => tracing::info!(filter = %text, "log filter changed"),
        Err(e) => tracing::warn!("log filter unchanged: {e:#}"),
    }
}

/// Take SIGHUP from now on (its default would end the process): until
/// `stop`, each one sets the filter from `file`. Also once at start, if
/// the file exists, so that a restart keeps the level.
pub fn reload_on_hangup(
    file: Option<PathBuf>,
    filter: Filter,
    stop: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    if let Some(f) = file.as_deref().filter(|f| f.exists()) {
        apply(f, &filter);
    }
    Ok(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = hangups.recv() => match &file {
                    Some(f) => apply(f, &filter),
                    None => tracing::warn!("SIGHUP ignored: no --log-level-file to read"),
                },
            }
        }
    })
}
