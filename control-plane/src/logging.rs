//! The master's log: plain text (coloured only on a terminal) or one JSON
//! object per line, on stderr, under a filter that can be changed while the
//! master runs: `PUT /debug/flags/v` on the API port, for cluster admins
//! (see `api::debug_flags`).
//!
//! The node agent has a module of the same shape (`node-agent/src/logging.rs`):
//! the two binaries share no crate where a log subscriber belongs (`proto` is
//! the wire protocol, `raft-store` a library that must not install one), and
//! the common part is the dozen lines of [`init`].

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The filter when neither `--log-level` nor `RUST_LOG` names one.
pub const DEFAULT_FILTER: &str = "info,openraft=warn";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, target, fields (with the
    /// message) and spans.
    Json,
}

/// The log flags, global to every subcommand.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// How log lines are written to stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "SKIFF_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: Format,
    /// The starting filter: a level or tracing directives, as
    /// "debug" or "info,raft_store=debug" (default: $RUST_LOG, else
    /// "info,openraft=warn"); changed at run time with PUT /debug/flags/v.
    #[arg(long = "log-level", visible_alias = "v", global = true)]
    pub level: Option<String>,
}

/// A filter directive that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("bad log filter {directive:?}: {reason}")]
pub struct BadFilter {
    pub directive: String,
    reason: String,
}

/// The live filter and the directive it was made from.
struct Live {
    handle: reload::Handle<EnvFilter, Registry>,
    directive: Mutex<String>,
}

static LIVE: OnceLock<Live> = OnceLock::new();

fn parse(directive: &str) -> Result<EnvFilter, BadFilter> {
    if directive.trim().is_empty() {
        return Err(BadFilter {
            directive: String::new(),
            reason: "it is empty".into(),
        });
    }
    EnvFilter::builder()
        .parse(directive)
        .map_err(|e| BadFilter {
            directive: directive.to_string(),
            reason: e.to_string(),
        })
}

/// Install the process's subscriber. Call once, before anything logs.
pub fn init(args: &Args) -> Result<(), BadFilter> {
    let directive = match (&args.level, std::env::var("RUST_LOG")) {
        (Some(d), _) => d.clone(),
        (None, Ok(d)) if !d.trim().is_empty() => d,
        _ => DEFAULT_FILTER.to_string(),
    };
    let (filter, handle) = reload::Layer::new(parse(&directive)?);
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let text = (args.log_format == Format::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
    });
    let json = (args.log_format == Format::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .init();
    let _ = LIVE.set(Live {
        handle,
        directive: Mutex::new(directive),
    });
    Ok(())
}

/// The directive the filter now runs with (empty before [`init`]).
pub fn current() -> String {
    LIVE.get()
        .map(|l| l.directive.lock().map(|d| d.clone()).unwrap_or_default())
        .unwrap_or_default()
}

/// Replace the filter with `directive`; a directive that does not parse
/// changes nothing.
pub fn set(directive: &str) -> Result<(), BadFilter> {
    let directive = directive.trim();
    let filter = parse(directive)?;
    let Some(live) = LIVE.get() else {
        return Ok(());
    };
    let mut now = live.directive.lock().unwrap_or_else(|e| e.into_inner());
    live.handle.reload(filter).map_err(|e| BadFilter {
        directive: directive.to_string(),
        reason: e.to_string(),
    })?;
    *now = directive.to_string();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse_or_are_refused() {
        assert!(parse("debug").is_ok());
        assert!(parse("info,raft_store=debug").is_ok());
        assert!(parse("info,raft_store=loud").is_err());
        assert!(parse(" ").is_err());
        assert!(set("warn,x=[").is_err());
    }
}
