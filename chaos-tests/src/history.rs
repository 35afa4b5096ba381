//! What the clients did: one record per operation, with invocation and
//! completion times, in the style of Jepsen's histories. A failed check
//! saves the history as JSON lines.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A linearizable single-key read; `value` is what it saw.
    Read {
        value: Option<u64>,
    },
    Write {
        value: u64,
    },
    /// Txn: if the value is `from` (None: the key is absent), put `to`.
    /// `swapped` is the Txn's `succeeded`, when known.
    Cas {
        from: Option<u64>,
        to: u64,
        swapped: Option<bool>,
    },
    /// Add an element to a set (a put of a fresh key).
    Add {
        value: u64,
    },
    /// A Txn putting `value` under every one of `keys` (watch workload);
    /// `revision` is the revision it committed at.
    MultiPut {
        keys: Vec<String>,
        value: u64,
        revision: Option<i64>,
    },
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// Definitely not applied.
    Fail,
    /// Unknown: it may or may not have been applied (timeout, lost connection).
    Info,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub client: u64,
    /// The master the request went to (index into the cluster).
    #[serde(default)]
    pub node: usize,
    pub key: String,
    pub op: Op,
    /// Nanoseconds since the run started.
    pub call: u64,
    pub ret: u64,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct History {
    start: Instant,
    records: Arc<Mutex<Vec<Record>>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            start: Instant::now(),
            records: Arc::default(),
        }
    }
}

impl History {
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn push(&self, r: Record) {
        self.records.lock().expect("history lock").push(r);
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.lock().expect("history lock").clone()
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for r in self.records() {
            serde_json::to_writer(&mut f, &r)?;
            f.write_all(b"\n")?;
        }
        f.flush()
    }
}
