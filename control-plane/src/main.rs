//! `control-plane`: the Skiff master.
//!
//! Every master runs the same binary: it embeds the replicated store
//! (`raft-store`), serves the etcd v3 API to clients (`etcd/`), the
//! Kubernetes API over HTTPS (`api/`, objects kept by `registry`, certificates
//! from `pki`) and Prometheus metrics over HTTP (`metrics_http`). Later issues
//! add the leader-only scheduler and controllers, and the agent gateway.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
// tonic::Status and openraft::StorageError are the error types the gRPC and
// openraft traits require; boxing them at every call site buys nothing.
#![allow(clippy::result_large_err)]

mod api;
mod cli;
mod etcd;
mod metrics_http;
mod pki;
mod registry;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("control-plane: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control-plane: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
