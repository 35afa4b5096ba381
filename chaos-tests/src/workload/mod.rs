//! Client workloads. Each runs several concurrent client tasks against the
//! masters until the deadline, recording every operation in the history;
//! the matching checker in `checker/` judges the result.

pub mod register;
pub mod set;
pub mod watch;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rand::Rng;
use tonic::transport::Channel;

use crate::history::History;

/// What every client task shares.
pub struct Ctx {
    pub history: History,
    /// One channel per master, with the request timeout.
    pub endpoints: Vec<Channel>,
    stopped: AtomicBool,
    next_value: AtomicU64,
}

impl Ctx {
    pub fn new(history: History, endpoints: Vec<Channel>) -> Self {
        Ctx {
            history,
            endpoints,
            stopped: AtomicBool::new(false),
            next_value: AtomicU64::new(1),
        }
    }

    /// Tell every client to finish its current operation and return.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// A value never written before in this run.
    pub fn fresh(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }

    pub fn running(&self) -> bool {
        !self.stopped.load(Ordering::Acquire)
    }
}

/// Which master a client talks to: its own until something goes wrong, then
/// another one at random.
pub struct Endpoint {
    pub index: usize,
    n: usize,
}

impl Endpoint {
    pub fn new(client: u64, n: usize) -> Self {
        Endpoint {
            index: client as usize % n,
            n,
        }
    }

    /// Move to another master (a retry goes elsewhere, as etcd's client
    /// does after an unavailable endpoint).
    pub fn switch(&mut self, rng: &mut impl Rng) {
        if self.n > 1 {
            self.index = (self.index + rng.gen_range(1..self.n)) % self.n;
        }
    }
}
