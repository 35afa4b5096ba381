//! The register workload's history, checked for linearizability key by key.

use std::collections::BTreeMap;

use super::linearizable::{self, Kind, Verdict};
use crate::history::{Op, Record, Status};

/// Search steps allowed per key before giving up with "unknown".
const BUDGET: u64 = 20_000_000;

#[derive(Debug, Default)]
pub struct Report {
    pub keys: usize,
    pub ops: usize,
    /// (key, explanation) for every key whose history is not linearizable.
    pub violations: Vec<(String, String)>,
    /// Keys whose check ran out of budget.
    pub unknown: Vec<String>,
}

/// Turn one record into the checker's operation; None if it has no bearing
/// (a failed read, or a write that definitely did not happen).
fn to_op(r: &Record) -> Option<linearizable::Op> {
    let ret = match r.status {
        Status::Ok => Some(r.ret),
        Status::Info => None,
        Status::Fail => return None,
    };
    let kind = match &r.op {
        Op::Read { value } if r.status == Status::Ok => Kind::Read { value: *value },
        Op::Read { .. } => return None,
        Op::Write { value } => Kind::Write { value: *value },
        Op::Cas { from, to, swapped } => Kind::Cas {
            from: *from,
            to: *to,
            ok: if ret.is_some() { *swapped } else { None },
        },
        _ => return None,
    };
    Some(linearizable::Op {
        client: r.client,
        call: r.call,
        ret,
        kind,
    })
}

pub fn check(records: &[Record]) -> Report {
    let mut by_key: BTreeMap<&str, Vec<(usize, linearizable::Op)>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        if let Some(op) = to_op(r) {
            by_key.entry(r.key.as_str()).or_default().push((i, op));
        }
    }
    let mut report = Report {
        keys: by_key.len(),
        ..Default::default()
    };
    for (key, ops) in by_key {
        report.ops += ops.len();
        let history: Vec<linearizable::Op> = ops.iter().map(|(_, op)| op.clone()).collect();
        match linearizable::check(&history, None, BUDGET) {
            Verdict::Linearizable => {}
            Verdict::Unknown => report.unknown.push(key.to_string()),
            Verdict::Violation {
                longest_prefix,
                stuck_at,
            } => {
                let stuck: Vec<String> = stuck_at
                    .iter()
                    .take(6)
                    .map(|&i| format!("{:?}", records[ops[i].0]))
                    .collect();
                report.violations.push((
                    key.to_string(),
                    format!(
                        "not linearizable: {} of {} ops linearized; stuck at:\n    {}",
                        longest_prefix,
                        history.len(),
                        stuck.join("\n    ")
                    ),
                ));
            }
        }
    }
    report
}
