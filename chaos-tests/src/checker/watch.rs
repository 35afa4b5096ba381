//! The watch workload's check. For every watcher:
//! - revisions never go backwards, and no (revision, key) comes twice;
//! - all events of one revision arrive in one response;
//! - each revision's events are exactly one write's keys and value, at the
//!   revision that write was acknowledged with (and never from a write that
//!   definitely failed, or one nobody made);
//! - every acknowledged write up to the final revision is there (no gaps);
//! - replaying the events gives the final store contents.
//!
//! And all watchers saw the same sequence.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::history::{Op, Record, Status};
use crate::workload::watch::{Event, WatchLog};

struct Write<'a> {
    keys: &'a [String],
    status: Status,
    revision: Option<i64>,
}

/// Returns one line per violation found.
pub fn check(
    records: &[Record],
    logs: &[WatchLog],
    final_state: &BTreeMap<String, u64>,
) -> Vec<String> {
    let mut writes: HashMap<u64, Write<'_>> = HashMap::new();
    for r in records {
        if let Op::MultiPut {
            keys,
            value,
            revision,
        } = &r.op
        {
            writes.insert(
                *value,
                Write {
                    keys,
                    status: r.status,
                    revision: *revision,
                },
            );
        }
    }
    let mut problems = Vec::new();
    let mut reference: Option<Vec<&Event>> = None;
    for (w, log) in logs.iter().enumerate() {
        let mut say = |m: String| problems.push(format!("watcher {w}: {m}"));
        for e in &log.errors {
            say(e.clone());
        }
        // Order, uniqueness and atomicity.
        let mut seen: Vec<&Event> = Vec::new();
        let mut response_of: HashMap<i64, usize> = HashMap::new();
        let mut keys_at: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
        for (ri, resp) in log.responses.iter().enumerate() {
            for e in resp {
                if let Some(prev) = seen.last() {
                    if e.revision < prev.revision {
                        say(format!(
                            "revision {} after {} (out of order)",
                            e.revision, prev.revision
                        ));
                    }
                }
                if let Some(&r) = response_of.get(&e.revision) {
                    if r != ri {
                        say(format!(
                            "revision {} split across responses {r} and {ri} (or repeated)",
                            e.revision
                        ));
                    }
                }
                response_of.insert(e.revision, ri);
                if !keys_at.entry(e.revision).or_default().insert(&e.key) {
                    say(format!(
                        "duplicate event {} at revision {}",
                        e.key, e.revision
                    ));
                }
                seen.push(e);
            }
        }
        // Each revision against the write that made it.
        let mut by_rev: BTreeMap<i64, Vec<&Event>> = BTreeMap::new();
        for e in &seen {
            by_rev.entry(e.revision).or_default().push(e);
        }
        for (rev, events) in &by_rev {
            let values: BTreeSet<Option<u64>> = events.iter().map(|e| e.value).collect();
            if values.len() != 1 {
                say(format!("revision {rev} mixes values {values:?}"));
                continue;
            }
            let Some(value) = values.into_iter().next().flatten() else {
                say(format!("revision {rev} deletes, but nobody deletes"));
                continue;
            };
            let Some(write) = writes.get(&value) else {
                say(format!(
                    "revision {rev} carries value {value} that nobody wrote"
                ));
                continue;
            };
            if write.status == Status::Fail {
                say(format!(
                    "revision {rev} carries value {value} of a write that failed"
                ));
            }
            if write.revision.is_some_and(|r| r != *rev) {
                say(format!(
                    "value {value} seen at revision {rev}, acknowledged at {:?}",
                    write.revision
                ));
            }
            let keys: BTreeSet<&str> = events.iter().map(|e| e.key.as_str()).collect();
            let wrote: BTreeSet<&str> = write.keys.iter().map(|k| k.as_str()).collect();
            if keys != wrote {
                say(format!(
                    "revision {rev} has keys {keys:?}, the write put {wrote:?}"
                ));
            }
        }
        // No gaps: every acknowledged write is there.
        let mut missed: Vec<i64> = writes
            .values()
            .filter(|wr| wr.status == Status::Ok)
            .filter_map(|wr| wr.revision)
            .filter(|r| !by_rev.contains_key(r))
            .collect();
        missed.sort();
        if !missed.is_empty() {
            say(format!(
                "missed {} acknowledged revisions, first {:?}",
                missed.len(),
                &missed[..missed.len().min(5)]
            ));
        }
        // Replaying the stream gives the final contents.
        let mut state: BTreeMap<String, u64> = BTreeMap::new();
        for e in &seen {
            match e.value {
                Some(v) => state.insert(e.key.clone(), v),
                None => state.remove(&e.key),
            };
        }
        if &state != final_state {
            let differ: Vec<&String> = final_state
                .keys()
                .chain(state.keys())
                .filter(|k| state.get(*k) != final_state.get(*k))
                .take(5)
                .collect();
            say(format!(
                "replayed events differ from the store at {differ:?}"
            ));
        }
        // Every watcher saw the same thing.
        match &reference {
            None => reference = Some(seen),
            Some(first) => {
                if first != &seen {
                    let at = first
                        .iter()
                        .zip(&seen)
                        .position(|(a, b)| a != b)
                        .unwrap_or(first.len().min(seen.len()));
                    say(format!(
                        "differs from watcher 0 at event {at} ({} vs {} events)",
                        seen.len(),
                        first.len()
                    ));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(keys: &[&str], value: u64, revision: i64) -> Record {
        Record {
            client: 0,
            node: 0,
            key: keys.join(","),
            op: Op::MultiPut {
                keys: keys.iter().map(|k| k.to_string()).collect(),
                value,
                revision: Some(revision),
            },
            call: 0,
            ret: 1,
            status: Status::Ok,
            error: None,
        }
    }

    fn ev(revision: i64, key: &str, value: u64) -> Event {
        Event {
            revision,
            key: key.into(),
            value: Some(value),
        }
    }

    fn log(responses: Vec<Vec<Event>>) -> WatchLog {
        WatchLog {
            responses,
            ..Default::default()
        }
    }

    fn final_state(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn history() -> Vec<Record> {
        vec![put(&["a", "b"], 1, 5), put(&["a"], 2, 6)]
    }

    #[test]
    fn faithful_streams_pass() {
        let logs = [
            log(vec![
                vec![ev(5, "a", 1), ev(5, "b", 1)],
                vec![ev(6, "a", 2)],
            ]),
            log(vec![vec![ev(5, "a", 1), ev(5, "b", 1), ev(6, "a", 2)]]),
        ];
        let p = check(&history(), &logs, &final_state(&[("a", 2), ("b", 1)]));
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn gap_is_found() {
        let logs = [log(vec![vec![ev(6, "a", 2)]])];
        let p = check(&history(), &logs, &final_state(&[("a", 2), ("b", 1)]));
        assert!(p.iter().any(|m| m.contains("missed 1")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("replayed")), "{p:?}");
    }

    #[test]
    fn split_revision_is_found() {
        let logs = [log(vec![
            vec![ev(5, "a", 1)],
            vec![ev(5, "b", 1), ev(6, "a", 2)],
        ])];
        let p = check(&history(), &logs, &final_state(&[("a", 2), ("b", 1)]));
        assert!(p.iter().any(|m| m.contains("split")), "{p:?}");
    }

    #[test]
    fn duplicate_and_reordered_events_are_found() {
        let logs = [log(vec![
            vec![ev(6, "a", 2)],
            vec![ev(5, "a", 1), ev(5, "b", 1)],
            vec![ev(6, "a", 2)],
        ])];
        let p = check(&history(), &logs, &final_state(&[("a", 2), ("b", 1)]));
        assert!(p.iter().any(|m| m.contains("out of order")), "{p:?}");
        assert!(
            p.iter()
                .any(|m| m.contains("split") || m.contains("duplicate")),
            "{p:?}"
        );
    }

    #[test]
    fn phantom_and_torn_writes_are_found() {
        let logs = [log(vec![
            vec![ev(5, "a", 1)],
            vec![ev(6, "a", 2)],
            vec![ev(7, "c", 9)],
        ])];
        let p = check(&history(), &logs, &final_state(&[("a", 2), ("b", 1)]));
        assert!(p.iter().any(|m| m.contains("nobody wrote")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("has keys")), "{p:?}");
    }

    #[test]
    fn watchers_that_disagree_are_found() {
        let logs = [
            log(vec![
                vec![ev(5, "a", 1), ev(5, "b", 1)],
                vec![ev(6, "a", 2)],
            ]),
            log(vec![vec![ev(5, "a", 1), ev(5, "b", 1)]]),
        ];
        let p = check(&history(), &logs, &final_state(&[("a", 2), ("b", 1)]));
        assert!(
            p.iter().any(|m| m.contains("differs from watcher 0")),
            "{p:?}"
        );
    }
}
