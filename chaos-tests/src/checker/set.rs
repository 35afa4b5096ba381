//! The set workload's check: compare what was added with what is there.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{Op, Record, Status};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub acknowledged: usize,
    /// Acknowledged adds missing from the final read.
    pub lost: Vec<u64>,
    /// Values present that no client ever tried to add (or whose add
    /// definitely failed).
    pub phantom: Vec<u64>,
    /// Adds with an unknown outcome that did / did not make it.
    pub unknown_present: usize,
    pub unknown_absent: usize,
}

impl Report {
    pub fn violations(&self) -> usize {
        self.lost.len() + self.phantom.len()
    }
}

pub fn check(records: &[Record], present: &[u64]) -> Report {
    let mut attempts: BTreeMap<u64, Status> = BTreeMap::new();
    for r in records {
        if let Op::Add { value } = r.op {
            attempts.insert(value, r.status);
        }
    }
    let present: BTreeSet<u64> = present.iter().copied().collect();
    let mut report = Report::default();
    for (&value, &status) in &attempts {
        match (status, present.contains(&value)) {
            (Status::Ok, true) => report.acknowledged += 1,
            (Status::Ok, false) => {
                report.acknowledged += 1;
                report.lost.push(value);
            }
            (Status::Info, true) => report.unknown_present += 1,
            (Status::Info, false) => report.unknown_absent += 1,
            (Status::Fail, true) => report.phantom.push(value),
            (Status::Fail, false) => {}
        }
    }
    report
        .phantom
        .extend(present.iter().filter(|v| !attempts.contains_key(v)));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(value: u64, status: Status) -> Record {
        Record {
            client: 0,
            node: 0,
            key: format!("set/{value}"),
            op: Op::Add { value },
            call: value,
            ret: value + 1,
            status,
            error: None,
        }
    }

    #[test]
    fn all_present_is_clean() {
        let h = [
            add(1, Status::Ok),
            add(2, Status::Info),
            add(3, Status::Fail),
        ];
        let r = check(&h, &[1, 2]);
        assert_eq!(r.violations(), 0);
        assert_eq!((r.acknowledged, r.unknown_present), (1, 1));
    }

    #[test]
    fn lost_acknowledged_add_is_a_violation() {
        let h = [add(1, Status::Ok), add(2, Status::Ok)];
        let r = check(&h, &[2]);
        assert_eq!(r.lost, vec![1]);
    }

    #[test]
    fn values_never_added_or_failed_are_phantoms() {
        let h = [add(1, Status::Ok), add(2, Status::Fail)];
        let r = check(&h, &[1, 2, 9]);
        assert_eq!(r.phantom, vec![2, 9]);
    }
}
