//! `control-plane`: the Skiff master, as a library (the binary in
//! `main.rs` only parses the command line and runs [`cli::Cli`]).
//!
//! Every master runs the same binary: it embeds the replicated store
//! (`raft-store`), serves the etcd v3 API to clients ([`etcd`]), the
//! Kubernetes API over HTTPS ([`api`], objects kept by [`registry`],
//! certificates from [`pki`]) and Prometheus metrics over HTTP
//! ([`metrics_http`]). While it is the Raft leader ([`leader`]) it runs the
//! [`scheduler`] and the [`controllers`]. Node agents connect to the
//! [`agents`] gateway over QUIC, join with bootstrap [`tokens`]. Every
//! request is held to what [`auth`] allows (RBAC over the roles
//! [`rbac_cache`] keeps in memory, and the node authorizer for nodes). [`masters`] adds and removes
//! masters (init, join, leave). [`logging`] sets up the log and its
//! run-time filter.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
// tonic::Status and openraft::StorageError are the error types the gRPC and
// openraft traits require; boxing them at every call site buys nothing.
#![allow(clippy::result_large_err)]

pub mod agents;
pub mod api;
pub mod auth;
pub mod cli;
pub mod controllers;
pub mod encryption;
pub mod etcd;
pub mod kube_state;
pub mod leader;
pub mod logging;
pub mod masters;
pub mod metrics_http;
pub mod pki;
pub mod rbac_cache;
pub mod registry;
pub mod rest_client;
pub mod restore;
pub mod scheduler;
pub mod tokens;
