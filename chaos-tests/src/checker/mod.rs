//! Judges of a run's history.
//!
//! - [`at_most_one`]: no two pods of one name (different uids) running at
//!   once on any of the nodes, from their engines' histories.
//! - [`linearizable`]: a Wing-Gong/Lowe search for one register's history.
//! - [`register`]: splits the register workload's history per key and runs it.
//! - [`set`]: no acknowledged add lost, nothing present that was never added.
//! - [`watch`]: watch streams ordered, unique, gap-free, atomic per revision
//!   and consistent with the writes and the final contents.

pub mod at_most_one;
pub mod linearizable;
pub mod register;
pub mod set;
pub mod watch;
