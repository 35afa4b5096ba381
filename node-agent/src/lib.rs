//! The Skiff node agent, as a library: the `node-agent` binary runs one
//! on Docker; the scale benchmark runs many in one process on the fake
//! runtime.
//!
//! `node-agent join` gets the node a certificate from the cluster with a
//! bootstrap token ([`join`], [`identity`]); `node-agent run` then keeps a
//! QUIC session with the masters ([`session`]) that brings the node's
//! desired state ([`desired`]) and takes its reports back ([`reports`],
//! [`node_status`], with the pressure it reads in [`pressure`]), and runs the node's pods ([`pods`]) on a container
//! runtime ([`runtime`]: Docker, or a fake for scale tests), reading image
//! names with [`image_ref`]. `/metrics`
//! serves the agent's Prometheus metrics ([`metrics_http`]); [`stats`]
//! samples CPU and memory use for `metrics.k8s.io`; [`streams`] serves
//! what masters ask of the node. [`network`] gives pods their addresses
//! and routes to other nodes' pods; [`proxy`] programs Services in
//! nftables; [`dns`] serves cluster DNS. [`agent`] starts it all.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod agent;
pub mod desired;
pub mod dns;
pub mod identity;
pub mod image_ref;
pub mod join;
pub mod metrics_http;
pub mod network;
pub mod node_status;
pub mod pods;
pub mod pressure;
pub mod proxy;
pub mod reports;
pub mod runtime;
pub mod session;
pub mod stats;
pub mod streams;
