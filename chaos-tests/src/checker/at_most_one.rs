//! At most one pod of a name runs at a time, across every node: what a
//! StatefulSet promises. Judged over the container histories of all the
//! nodes' engines ([`crate::engines`]): each container runs from its
//! `start` to its `die` (or to the end of the history if it never died),
//! and two containers of pods with the same namespace and name but
//! different uids must never run at the same instant, wherever they ran.

use std::collections::BTreeMap;

use crate::engines::{Action, ContainerEvent};

/// One container's time running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub engine: String,
    pub container: String,
    pub pod_uid: String,
    /// Nanoseconds since the epoch, as the engine stamped them.
    pub from: i64,
    /// None: still running when the history ended.
    pub to: Option<i64>,
}

impl Run {
    fn end(&self) -> i64 {
        self.to.unwrap_or(i64::MAX)
    }

    fn overlaps(&self, other: &Run) -> bool {
        self.from < other.end() && other.from < self.end()
    }
}

/// Two instances of one pod name running at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// "namespace/name".
    pub pod: String,
    pub first: Run,
    pub second: Run,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |n: i64| n as f64 / 1e9;
        let to = |r: &Run| {
            r.to.map_or("end".to_string(), |t| format!("{:.3}", secs(t)))
        };
        write!(
            f,
            "{} ran twice: uid {} ({} on {}, {:.3}..{}) and uid {} ({} on {}, {:.3}..{})",
            self.pod,
            self.first.pod_uid,
            &self.first.container[..12.min(self.first.container.len())],
            self.first.engine,
            secs(self.first.from),
            to(&self.first),
            self.second.pod_uid,
            &self.second.container[..12.min(self.second.container.len())],
            self.second.engine,
            secs(self.second.from),
            to(&self.second),
        )
    }
}

/// Each container's runs, by pod ("namespace/name"), from the events of
/// every engine. A container may start more than once (a restart in
/// place); each start opens a run and the next die closes it.
pub fn runs(events: &[ContainerEvent]) -> BTreeMap<String, Vec<Run>> {
    let mut sorted: Vec<&ContainerEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.time_nano);
    let mut open: BTreeMap<(String, String), Run> = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for e in sorted {
        let Some(pod) = &e.pod else { continue };
        let key = (e.engine.clone(), e.container.clone());
        match e.action {
            Action::Start => {
                open.entry(key).or_insert_with(|| Run {
                    engine: e.engine.clone(),
                    container: e.container.clone(),
                    pod_uid: pod.uid.clone(),
                    from: e.time_nano,
                    to: None,
                });
            }
            Action::Die => {
                if let Some(mut run) = open.remove(&key) {
                    run.to = Some(e.time_nano);
                    out.entry(pod.full_name()).or_default().push(run);
                }
            }
        }
    }
    for ((_, _), run) in open {
        let pod = events
            .iter()
            .find(|e| e.container == run.container)
            .and_then(|e| e.pod.as_ref())
            .map(|p| p.full_name())
            .unwrap_or_default();
        out.entry(pod).or_default().push(run);
    }
    out
}

/// Every pair of runs of one pod name, with different uids, that overlap.
pub fn check(events: &[ContainerEvent]) -> Vec<Violation> {
    let mut found = Vec::new();
    for (pod, runs) in runs(events) {
        for (i, a) in runs.iter().enumerate() {
            for b in &runs[i + 1..] {
                if a.pod_uid != b.pod_uid && a.overlaps(b) {
                    found.push(Violation {
                        pod: pod.clone(),
                        first: a.clone(),
                        second: b.clone(),
                    });
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::PodOf;

    fn ev(engine: &str, container: &str, uid: &str, action: Action, t: i64) -> ContainerEvent {
        ContainerEvent {
            engine: engine.into(),
            container: container.into(),
            action,
            time_nano: t,
            pod: Some(PodOf {
                namespace: "default".into(),
                name: "one-0".into(),
                uid: uid.into(),
            }),
        }
    }

    #[test]
    fn one_after_another_is_fine() {
        let h = [
            ev("n1", "a", "u1", Action::Start, 10),
            ev("n1", "a", "u1", Action::Die, 20),
            ev("n2", "b", "u2", Action::Start, 21),
        ];
        assert!(check(&h).is_empty());
    }

    #[test]
    fn two_uids_at_once_on_two_engines_are_caught() {
        let h = [
            ev("n1", "a", "u1", Action::Start, 10),
            ev("n2", "b", "u2", Action::Start, 15),
            ev("n1", "a", "u1", Action::Die, 20),
        ];
        let v = check(&h);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].pod, "default/one-0");
        assert!(v[0].to_string().contains("ran twice"));
    }

    #[test]
    fn a_run_never_ended_lasts_to_the_end() {
        let h = [
            ev("n1", "a", "u1", Action::Start, 10),
            ev("n1", "b", "u2", Action::Start, 1_000),
            ev("n1", "b", "u2", Action::Die, 2_000),
        ];
        assert_eq!(check(&h).len(), 1);
    }

    #[test]
    fn containers_of_one_pod_do_not_count_against_it() {
        // The sandbox and the app of one uid, and a restart in place.
        let h = [
            ev("n1", "sandbox", "u1", Action::Start, 10),
            ev("n1", "app", "u1", Action::Start, 11),
            ev("n1", "app", "u1", Action::Die, 12),
            ev("n1", "app", "u1", Action::Start, 13),
        ];
        assert!(check(&h).is_empty());
        assert_eq!(runs(&h)["default/one-0"].len(), 3);
    }
}
