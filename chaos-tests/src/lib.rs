//! The Skiff chaos harness: real `control-plane` masters in network
//! namespaces, concurrent etcd-API clients, composable faults, and checkers
//! that judge the recorded history.
//!
//! - [`net`]: namespaces, the bridge, nftables fault rules.
//! - [`cluster`]: the master processes (start, kill -9, pause, find the leader).
//! - [`nemesis`]: the faults, each injected and healed.
//! - [`workload`]: register, set and watch clients that record a [`history`].
//! - [`checker`]: linearizability (Wing-Gong/Lowe), set and watch checks,
//!   and at-most-one for pods across nodes.
//! - [`node_partition`]: a node host cut from its link (a nemesis for the
//!   node side, run against real agents by control-plane's tests).
//! - [`engines`]: what the nodes' Docker engines ran, and when.
//! - [`run`]: one scenario from start to verdict.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod checker;
pub mod client;
pub mod cluster;
pub mod engines;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod node_partition;
pub mod run;
pub mod workload;
