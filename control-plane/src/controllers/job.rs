//! Job: run pods from the template until `completions` of them have
//! succeeded, at most `parallelism` at a time. A failed pod is replaced after
//! an exponential delay (2 s doubling to 6 min) until more than
//! `backoffLimit` pods have failed, or the job has been active longer than
//! `activeDeadlineSeconds`; then it fails and its running pods are deleted.
//!
//! Finished pods are counted as Kubernetes counts them, so that a count
//! survives the pod's deletion and is never taken twice: every pod carries
//! the `batch.kubernetes.io/job-tracking` finalizer; a pod that has finished
//! (or is being deleted) is first recorded by uid in
//! `status.uncountedTerminatedPods`, then released (its finalizer removed),
//! and once it is released its uid moves into `status.succeeded`/`failed`.
//! The Complete or Failed condition is written once nothing is uncounted.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::events::{reference, Kind};
use super::ownership::{controlled_by, controller_of, deletion_rank, is_active, is_ready};
use super::pods::{self, create_pods, delete_pod, revision_of};
use super::runtime::{key_of, split_key, Action, Change, WorkQueue};
use super::{Ctx, Result};

const COMPONENT: &str = "job-controller";
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";
const UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const LEGACY_UID_LABEL: &str = "controller-uid";
const DEFAULT_BACKOFF_LIMIT: i32 = 6;
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("job");
    let q = queue.clone();
    ctx.jobs
        .on_change(move |c: &Change<'_, Job>| q.add(key_of(&c.object().metadata)));
    let q = queue.clone();
    ctx.pods.on_change(move |c: &Change<'_, Pod>| {
        let meta = &c.object().metadata;
        let ns = meta.namespace.as_deref().unwrap_or("");
        if let Some(o) = controller_of(meta).filter(|o| o.kind == "Job") {
            q.add(format!("{ns}/{}", o.name));
        }
        // A tracked pod whose job let it go (orphaned) still needs releasing.
        if has_finalizer(c.object()) {
            if let Some(job) = meta.labels.as_ref().and_then(|l| l.get(JOB_NAME_LABEL)) {
                q.add(format!("{ns}/{job}"));
            }
        }
    });
    queue
}

/// The type of the job's finished condition ("Complete" or "Failed"), if any.
pub fn finished(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
}

/// How a pod ended, if it has: one deleted before it succeeded has failed.
fn outcome(pod: &Pod) -> Option<Outcome> {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => Some(Outcome::Succeeded),
        Some("Failed") => Some(Outcome::Failed),
        _ if pod.metadata.deletion_timestamp.is_some() => Some(Outcome::Failed),
        _ => None,
    }
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

fn uid_of(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

pub async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action> {
    let (ns, name) = split_key(&key);
    let ns = ns.unwrap_or("default");
    let job = ctx.jobs.get(&key);
    let uid = job.as_ref().and_then(|j| j.metadata.uid.as_deref());
    let (mine, others): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) = ctx
        .pods
        .list_in(ns)
        .into_iter()
        .filter(|p| {
            let by_owner =
                controller_of(&p.metadata).is_some_and(|o| o.kind == "Job" && o.name == name);
            let by_label = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(JOB_NAME_LABEL));
            by_owner || by_label.is_some_and(|l| l == name)
        })
        .partition(|p| controlled_by(&p.metadata, uid));
    // Pods of a job that is gone, of an earlier job of this name, or orphaned:
    // nobody will count them, so they are released once they are done.
    let stale: Vec<&Pod> = others
        .iter()
        .filter(|p| {
            has_finalizer(p) && (outcome(p).is_some() || controller_of(&p.metadata).is_none())
        })
        .map(|p| &**p)
        .collect();
    release(&ctx, &stale).await?;
    let Some(job) = job else {
        return Ok(Action::Done);
    };
    if job.metadata.deletion_timestamp.is_some() {
        let tracked: Vec<&Pod> = mine
            .iter()
            .filter(|p| has_finalizer(p))
            .map(|p| &**p)
            .collect();
        release(&ctx, &tracked).await?;
        return Ok(Action::Done);
    }
    let Some(spec) = job.spec.as_ref() else {
        return Ok(Action::Done);
    };
    let old = job.status.clone().unwrap_or_default();
    let now = ctx.now();
    let mut counts = Counts::from_status(&old);
    counts.track(&mine);

    let done_as = finished(&job).map(str::to_string);
    let start_time = old.start_time.as_ref().map_or(now, |t| t.0);
    let deadline = spec
        .active_deadline_seconds
        .map(|s| start_time + chrono::Duration::seconds(s));
    let active: Vec<&Arc<Pod>> = mine.iter().filter(|p| is_active(p)).collect();
    let (ok, failed) = counts.totals();
    // What the job has come to, if it is finished (or about to be).
    let verdict: Option<(&str, &str, &str)> = if done_as.is_some() {
        None
    } else if match spec.completions {
        Some(c) => ok >= c.max(0),
        // A work queue: done when one pod has succeeded and the rest have stopped.
        None => ok > 0 && active.is_empty(),
    } {
        Some((
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        ))
    } else if failed > spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT) {
        Some((
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if deadline.is_some_and(|d| now >= d) {
        Some((
            "Failed",
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else {
        None
    };

    let mut after: Option<Duration> = None;
    let mut created = 0;
    let mut deleted = 0;
    if done_as.is_some() || verdict.is_some() {
        for pod in &active {
            delete_pod(&ctx, COMPONENT, &reference(&*job), pod).await?;
            deleted += 1;
        }
    } else {
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let want = match spec.completions {
            Some(c) => parallelism.min(c - ok).max(0) as usize,
            None if ok > 0 => active.len(),
            None => parallelism as usize,
        };
        if active.len() < want {
            match backoff_remaining(&mine, now) {
                Some(wait) => after = Some(wait),
                None => {
                    let new = (0..want - active.len()).map(|_| pod_from_template(&job));
                    let owner = reference(&*job);
                    let revision =
                        create_pods(&ctx, COMPONENT, &owner, new.collect(), &mut created).await?;
                    ctx.pods.caught_up(revision).await?;
                }
            }
        } else if active.len() > want {
            let mut excess = active.clone();
            excess.sort_by_key(|p| deletion_rank(p));
            for pod in &excess[..active.len() - want] {
                delete_pod(&ctx, COMPONENT, &reference(&*job), pod).await?;
                deleted += 1;
            }
        }
        if let Some(d) = deadline {
            let left = (d - now).to_std().unwrap_or_default();
            after = Some(after.map_or(left, |a| a.min(left)));
        }
    }

    let mut conditions = old.conditions.clone().unwrap_or_default();
    let mut completion_time = old.completion_time.clone();
    let finishing = verdict.filter(|_| counts.settled());
    if let Some((type_, reason, message)) = finishing {
        conditions.push(JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            last_probe_time: Some(Time(now)),
            last_transition_time: Some(Time(now)),
        });
        if type_ == "Complete" {
            completion_time = Some(Time(now));
        }
    }
    let active_now = (active.len() + created).saturating_sub(deleted) as i32;
    let status = JobStatus {
        active: (active_now > 0).then_some(active_now),
        ready: Some(active.iter().filter(|p| is_ready(p)).count() as i32),
        start_time: Some(Time(start_time)),
        completion_time,
        conditions: (!conditions.is_empty()).then_some(conditions),
        uncounted_terminated_pods: Some(counts.uncounted()),
        ..counts.status(old.clone())
    };
    if job.status.as_ref() != Some(&status) {
        let mut next = (*job).clone();
        next.status = Some(status);
        let written = ctx.client.replace_status(&next).await?;
        ctx.jobs.caught_up(revision_of(&written.metadata)).await?;
    }
    if let Some((type_, reason, message)) = finishing {
        let (kind, reason, message) = match type_ {
            "Complete" => (Kind::Normal, "Completed", "Job completed"),
            _ => (Kind::Warning, reason, message),
        };
        ctx.recorder.record(
            COMPONENT,
            reference(&*job),
            kind,
            reason,
            message.to_string(),
        );
    }
    // Recorded in the status just written: now they may go.
    let recorded: Vec<&Pod> = mine
        .iter()
        .filter(|p| has_finalizer(p) && counts.is_uncounted(uid_of(p)))
        .map(|p| &**p)
        .collect();
    release(&ctx, &recorded).await?;
    Ok(after.map_or(Action::Done, Action::After))
}

/// Succeeded and failed pods: counted (released) and uncounted (recorded by
/// uid, not yet released).
struct Counts {
    succeeded: i32,
    failed: i32,
    uncounted_succeeded: Vec<String>,
    uncounted_failed: Vec<String>,
}

impl Counts {
    fn from_status(s: &JobStatus) -> Counts {
        let u = s.uncounted_terminated_pods.clone().unwrap_or_default();
        Counts {
            succeeded: s.succeeded.unwrap_or(0),
            failed: s.failed.unwrap_or(0),
            uncounted_succeeded: u.succeeded.unwrap_or_default(),
            uncounted_failed: u.failed.unwrap_or_default(),
        }
    }

    /// Count the uncounted pods that have been released, and record the
    /// tracked pods that have finished.
    fn track(&mut self, pods: &[Arc<Pod>]) {
        let tracked = |uid: &str| pods.iter().any(|p| uid_of(p) == uid && has_finalizer(p));
        let before = self.uncounted_succeeded.len();
        self.uncounted_succeeded.retain(|u| tracked(u));
        self.succeeded += (before - self.uncounted_succeeded.len()) as i32;
        let before = self.uncounted_failed.len();
        self.uncounted_failed.retain(|u| tracked(u));
        self.failed += (before - self.uncounted_failed.len()) as i32;
        for p in pods.iter().filter(|p| has_finalizer(p)) {
            let uid = uid_of(p).to_string();
            if self.is_uncounted(&uid) {
                continue;
            }
            match outcome(p) {
                Some(Outcome::Succeeded) => self.uncounted_succeeded.push(uid),
                Some(Outcome::Failed) => self.uncounted_failed.push(uid),
                None => {}
            }
        }
    }

    fn is_uncounted(&self, uid: &str) -> bool {
        self.uncounted_succeeded.iter().any(|u| u == uid)
            || self.uncounted_failed.iter().any(|u| u == uid)
    }

    /// (succeeded, failed), counted or not.
    fn totals(&self) -> (i32, i32) {
        (
            self.succeeded + self.uncounted_succeeded.len() as i32,
            self.failed + self.uncounted_failed.len() as i32,
        )
    }

    /// Nothing is waiting to be counted.
    fn settled(&self) -> bool {
        self.uncounted_succeeded.is_empty() && self.uncounted_failed.is_empty()
    }

    fn uncounted(&self) -> UncountedTerminatedPods {
        let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        UncountedTerminatedPods {
            succeeded: some(&self.uncounted_succeeded),
            failed: some(&self.uncounted_failed),
        }
    }

    /// `base` with the counts (zero is left out, as Kubernetes does).
    fn status(&self, base: JobStatus) -> JobStatus {
        JobStatus {
            succeeded: (self.succeeded > 0).then_some(self.succeeded),
            failed: (self.failed > 0).then_some(self.failed),
            ..base
        }
    }
}

/// When a pod finished (or was deleted), as well as its status tells.
fn finished_at(pod: &Pod) -> Option<DateTime<Utc>> {
    let status = pod.status.as_ref();
    let containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0);
    let conditions = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    containers
        .max()
        .or_else(|| conditions.max())
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// How long new pods must still wait: `n` failures since the last success
/// delay them 2 s × 2^(n-1) (at most 6 min) after the last failure.
fn backoff_remaining(pods: &[Arc<Pod>], now: DateTime<Utc>) -> Option<Duration> {
    let last_success = pods
        .iter()
        .filter(|p| outcome(p) == Some(Outcome::Succeeded))
        .filter_map(|p| finished_at(p))
        .max();
    let failures: Vec<DateTime<Utc>> = pods
        .iter()
        .filter(|p| outcome(p) == Some(Outcome::Failed))
        .filter_map(|p| finished_at(p))
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let last = *failures.iter().max()?;
    let delay = backoff_delay(failures.len());
    let ready_at = last + chrono::Duration::from_std(delay).ok()?;
    (ready_at - now).to_std().ok().filter(|d| !d.is_zero())
}

fn backoff_delay(failures: usize) -> Duration {
    let shift = failures.saturating_sub(1).min(16) as u32;
    BACKOFF_BASE.saturating_mul(1 << shift).min(BACKOFF_MAX)
}

/// A new pod from the job's template, labelled for it and tracked by it.
fn pod_from_template(job: &Job) -> Pod {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let uid = job.metadata.uid.as_deref().unwrap_or_default();
    let labels = [
        (JOB_NAME_LABEL, name),
        (LEGACY_JOB_NAME_LABEL, name),
        (UID_LABEL, uid),
        (LEGACY_UID_LABEL, uid),
    ];
    let template = job.spec.as_ref().map(|s| &s.template);
    let mut pod = pods::from_template(job, template, &labels, None);
    pod.metadata.finalizers = Some(vec![TRACKING_FINALIZER.to_string()]);
    pod
}

/// Remove the tracking finalizer from `pods` (a pod being deleted then goes).
async fn release(ctx: &Ctx, pods: &[&Pod]) -> Result<()> {
    let mut last = 0;
    for pod in pods {
        let rest: Vec<&String> = pod
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != TRACKING_FINALIZER)
            .collect();
        let patch = json!({"metadata": {
            "finalizers": rest,
            "resourceVersion": pod.metadata.resource_version,
        }});
        let name = pod.metadata.name.as_deref().unwrap_or("");
        match ctx
            .client
            .patch::<Pod>(pod.metadata.namespace.as_deref(), name, None, &patch)
            .await
        {
            Ok(p) => last = last.max(revision_of(&p.metadata)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    if last > 0 {
        ctx.pods.caught_up(last).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(uid: &str, phase: &str, at: i64, tracked: bool) -> Arc<Pod> {
        let t = DateTime::<Utc>::from_timestamp(at, 0).unwrap();
        Arc::new(Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                finalizers: tracked.then(|| vec![TRACKING_FINALIZER.to_string()]),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "False".into(),
                    last_transition_time: Some(Time(t)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn finished_pods_are_recorded_then_counted_once_released() {
        let mut c = Counts::from_status(&JobStatus::default());
        let pods = vec![
            pod("a", "Succeeded", 0, true),
            pod("b", "Failed", 0, true),
            pod("c", "Running", 0, true),
        ];
        c.track(&pods);
        assert_eq!(c.totals(), (1, 1));
        assert_eq!((c.succeeded, c.failed), (0, 0));
        assert!(c.is_uncounted("a") && c.is_uncounted("b") && !c.is_uncounted("c"));
        // a is released, b is gone: both move into the counts, once.
        let pods = vec![
            pod("a", "Succeeded", 0, false),
            pod("c", "Running", 0, true),
        ];
        c.track(&pods);
        c.track(&pods);
        assert_eq!((c.succeeded, c.failed), (1, 1));
        assert!(c.settled());
    }

    #[test]
    fn failures_back_off_exponentially_from_the_last_one() {
        assert_eq!(backoff_delay(1), Duration::from_secs(2));
        assert_eq!(backoff_delay(3), Duration::from_secs(8));
        assert_eq!(backoff_delay(30), BACKOFF_MAX);
        let at = |s| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        let pods = vec![
            pod("a", "Failed", 100, false),
            pod("b", "Failed", 110, false),
        ];
        assert_eq!(
            backoff_remaining(&pods, at(111)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(backoff_remaining(&pods, at(114)), None);
        // A success since resets the count.
        let pods = vec![
            pod("a", "Failed", 100, false),
            pod("s", "Succeeded", 105, false),
            pod("b", "Failed", 110, false),
        ];
        assert_eq!(
            backoff_remaining(&pods, at(111)),
            Some(Duration::from_secs(1))
        );
    }
}
