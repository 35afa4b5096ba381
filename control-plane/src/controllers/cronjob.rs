//! CronJob: create a Job from `spec.jobTemplate` at each time the schedule
//! names (UTC), keep the status (`active`, `lastScheduleTime`,
//! `lastSuccessfulTime`) and the history (finished jobs beyond
//! `successfulJobsHistoryLimit`/`failedJobsHistoryLimit` are deleted).
//!
//! Only the latest unmet time is run, as Kubernetes does: the latest
//! schedule time in (lastScheduleTime or creation, now], if it is no older
//! than `startingDeadlineSeconds`. Its job is named for the time
//! (`<cronjob>-<unix minutes>`), so a reconcile repeated after a lost
//! status write finds the job instead of creating another. The reconcile
//! asks to be called again at the next schedule time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::events::{reference, Kind};
use super::job::finished;
use super::ownership::{controlled_by, controller_of, controller_ref};
use super::pods::revision_of;
use super::runtime::{key_of, Action, Change, WorkQueue};
use super::{Ctx, Result};

const COMPONENT: &str = "cronjob-controller";
pub const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Woken this long after a schedule time, so the clock has surely passed it.
const SLACK: Duration = Duration::from_millis(100);

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("cronjob");
    let q = queue.clone();
    ctx.cronjobs
        .on_change(move |c: &Change<'_, CronJob>| q.add(key_of(&c.object().metadata)));
    let q = queue.clone();
    ctx.jobs.on_change(move |c: &Change<'_, Job>| {
        let meta = &c.object().metadata;
        if let Some(o) = controller_of(meta).filter(|o| o.kind == "CronJob") {
            let ns = meta.namespace.as_deref().unwrap_or("");
            q.add(format!("{ns}/{}", o.name));
        }
    });
    queue
}

pub async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action> {
    let Some(cj) = ctx.cronjobs.get(&key) else {
        return Ok(Action::Done);
    };
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let Some(spec) = cj.spec.as_ref() else {
        return Ok(Action::Done);
    };
    let ns = cj.metadata.namespace.clone().unwrap_or_default();
    let uid = cj.metadata.uid.as_deref();
    let jobs: Vec<Arc<Job>> = ctx
        .jobs
        .list_in(&ns)
        .into_iter()
        .filter(|j| controlled_by(&j.metadata, uid))
        .collect();
    let old = cj.status.clone().unwrap_or_default();
    let mut status = CronJobStatus {
        active: None,
        ..old.clone()
    };

    // Finished jobs leave the active list; unfinished ones of ours join it.
    let mut active: Vec<ObjectReference> = Vec::new();
    for r in old.active.iter().flatten() {
        let Some(j) = jobs.iter().find(|j| j.metadata.uid == r.uid) else {
            continue; // gone
        };
        match finished(j) {
            None => active.push(r.clone()),
            Some(how) => ctx.recorder.record(
                COMPONENT,
                reference(&*cj),
                Kind::Normal,
                "SawCompletedJob",
                format!(
                    "Saw completed job: {}, status: {how}",
                    j.metadata.name.as_deref().unwrap_or("")
                ),
            ),
        }
    }
    for j in &jobs {
        if finished(j).is_none() && !active.iter().any(|r| r.uid == j.metadata.uid) {
            active.push(job_ref(j));
        }
    }
    let last_success = jobs
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref())
        .map(|t| t.0)
        .max();
    if last_success > old.last_successful_time.as_ref().map(|t| t.0) {
        status.last_successful_time = last_success.map(Time);
    }
    cleanup_history(&ctx, &cj, &jobs).await?;

    let mut after = None;
    match Schedule::parse(&spec.schedule) {
        Err(e) => warn(
            &ctx,
            &cj,
            "UnparseableSchedule",
            format!("unparseable schedule: {e}"),
        ),
        Ok(_) if !matches!(spec.time_zone.as_deref(), None | Some("UTC" | "Etc/UTC")) => warn(
            &ctx,
            &cj,
            "UnknownTimeZone",
            format!(
                "invalid timeZone {:?}: only UTC is supported",
                spec.time_zone.as_deref().unwrap_or("")
            ),
        ),
        Ok(_) if spec.suspend == Some(true) => {}
        Ok(schedule) => {
            let now = ctx.now();
            let earliest = status
                .last_schedule_time
                .as_ref()
                .or(cj.metadata.creation_timestamp.as_ref())
                .map_or(DateTime::<Utc>::MIN_UTC, |t| t.0);
            if let Some(t) = schedule.last_at_or_before(now).filter(|t| *t > earliest) {
                let late = spec
                    .starting_deadline_seconds
                    .is_some_and(|d| t + chrono::Duration::seconds(d) < now);
                if late {
                    warn(
                        &ctx,
                        &cj,
                        "MissSchedule",
                        format!("Missed scheduled time to start a job: {}", t.to_rfc2822()),
                    );
                } else if let Some(job) = run(&ctx, &cj, &jobs, &mut active, t).await? {
                    let listed = active.iter().any(|r| r.uid == job.metadata.uid);
                    if !listed && finished(&job).is_none() {
                        active.push(job_ref(&job));
                    }
                    status.last_schedule_time = Some(Time(t));
                }
            }
            after = schedule
                .next_after(now)
                .map(|next| (next - now).to_std().unwrap_or_default() + SLACK);
        }
    }

    status.active = (!active.is_empty()).then_some(active);
    if cj.status.as_ref() != Some(&status) {
        let mut next = (*cj).clone();
        next.status = Some(status);
        let written = ctx.client.replace_status(&next).await?;
        ctx.cronjobs
            .caught_up(revision_of(&written.metadata))
            .await?;
    }
    Ok(after.map_or(Action::Done, Action::After))
}

fn warn(ctx: &Ctx, cj: &CronJob, reason: &str, message: String) {
    ctx.recorder
        .record(COMPONENT, reference(cj), Kind::Warning, reason, message);
}

/// A reference for `status.active`: without a resourceVersion, which would
/// change the status at every change of the job.
fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        resource_version: None,
        ..reference(job)
    }
}

/// Start the job for schedule time `t`, as the concurrency policy allows;
/// the job, or None if the policy forbids it now.
async fn run(
    ctx: &Ctx,
    cj: &CronJob,
    jobs: &[Arc<Job>],
    active: &mut Vec<ObjectReference>,
    t: DateTime<Utc>,
) -> Result<Option<Job>> {
    let policy = cj
        .spec
        .as_ref()
        .and_then(|s| s.concurrency_policy.as_deref());
    let name = format!(
        "{}-{}",
        cj.metadata.name.as_deref().unwrap_or(""),
        t.timestamp().div_euclid(60)
    );
    let ours = |n: &str| jobs.iter().find(|j| j.metadata.name.as_deref() == Some(n));
    if let Some(j) = ours(&name) {
        // Created before, its status write lost.
        return Ok(Some((**j).clone()));
    }
    match policy {
        Some("Forbid") if !active.is_empty() => {
            ctx.recorder.record(
                COMPONENT,
                reference(cj),
                Kind::Normal,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid"
                    .into(),
            );
            return Ok(None);
        }
        Some("Replace") => {
            for r in active.drain(..) {
                let name = r.name.as_deref().unwrap_or("");
                delete_job(ctx, cj, name, r.uid.as_deref()).await?;
            }
        }
        _ => {}
    }
    match ctx.client.create(&job_from_template(cj, &name, t)).await {
        Ok(job) => {
            ctx.recorder.record(
                COMPONENT,
                reference(cj),
                Kind::Normal,
                "SuccessfulCreate",
                format!("Created job {name}"),
            );
            // The next reconcile must see it among the jobs.
            ctx.jobs.caught_up(revision_of(&job.metadata)).await?;
            Ok(Some(job))
        }
        Err(e) => {
            warn(ctx, cj, "FailedCreate", format!("Error creating job: {e}"));
            Err(e)
        }
    }
}

fn job_from_template(cj: &CronJob, name: &str, t: DateTime<Utc>) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_ANNOTATION.into(),
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cj.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Delete the oldest finished jobs beyond the history limits.
async fn cleanup_history(ctx: &Ctx, cj: &CronJob, jobs: &[Arc<Job>]) -> Result<()> {
    let spec = cj.spec.as_ref();
    let limits = [
        (
            "Complete",
            spec.and_then(|s| s.successful_jobs_history_limit)
                .unwrap_or(3),
        ),
        (
            "Failed",
            spec.and_then(|s| s.failed_jobs_history_limit).unwrap_or(1),
        ),
    ];
    for (how, limit) in limits {
        let mut done: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| finished(j) == Some(how) && j.metadata.deletion_timestamp.is_none())
            .collect();
        done.sort_by_key(|j| {
            let started = j.status.as_ref().and_then(|s| s.start_time.as_ref());
            let created = j.metadata.creation_timestamp.as_ref();
            (started.or(created).map(|t| t.0), j.metadata.name.clone())
        });
        let excess = done.len().saturating_sub(limit.max(0) as usize);
        for j in &done[..excess] {
            let name = j.metadata.name.as_deref().unwrap_or("");
            delete_job(ctx, cj, name, j.metadata.uid.as_deref()).await?;
        }
    }
    Ok(())
}

async fn delete_job(ctx: &Ctx, cj: &CronJob, name: &str, uid: Option<&str>) -> Result<()> {
    let ns = cj.metadata.namespace.as_deref();
    ctx.client
        .delete::<Job>(ns, name, uid, Some("Background"))
        .await?;
    ctx.recorder.record(
        COMPONENT,
        reference(cj),
        Kind::Normal,
        "SuccessfulDelete",
        format!("Deleted job {name}"),
    );
    Ok(())
}

/// A standard five-field cron schedule (minute, hour, day of month, month,
/// day of week), each field as a bit set of the values it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day of month or day of week was `*`: a day must then match both
    /// fields; otherwise either one (as cron, and Kubernetes, read it).
    any_day: bool,
}

struct Field {
    min: u32,
    /// The largest value `*` stands for.
    last: u32,
    /// The largest value that may be written (7 is also Sunday).
    max: u32,
    /// Names for the values from `min` on.
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    min: 0,
    last: 59,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    min: 0,
    last: 23,
    max: 23,
    names: &[],
};
const DAY: Field = Field {
    min: 1,
    last: 31,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    min: 1,
    last: 12,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const WEEKDAY: Field = Field {
    min: 0,
    last: 6,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Field {
    fn value(&self, s: &str) -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(self.min + i as u32);
        }
        let v: u32 = s.parse().map_err(|_| format!("bad value {s:?}"))?;
        if v < self.min || v > self.max {
            return Err(format!("{v} is out of range {}-{}", self.min, self.max));
        }
        Ok(v)
    }

    /// The values `s` allows, and whether it was a bare `*`.
    fn parse(&self, s: &str) -> Result<(u64, bool), String> {
        let (mut bits, mut star) = (0u64, false);
        for part in s.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, n)) => match n.parse::<u32>() {
                    Ok(n) if n > 0 => (r, Some(n)),
                    _ => return Err(format!("bad step {n:?}")),
                },
                None => (part, None),
            };
            let (lo, hi) = if range == "*" || range == "?" {
                star |= step.unwrap_or(1) == 1;
                (self.min, self.last)
            } else if let Some((a, b)) = range.split_once('-') {
                (self.value(a)?, self.value(b)?)
            } else {
                let v = self.value(range)?;
                // `n/step` runs from n to the end of the range.
                (v, if step.is_some() { self.last.max(v) } else { v })
            };
            if lo > hi {
                return Err(format!("range {range:?} runs backwards"));
            }
            for v in (lo..=hi).step_by(step.unwrap_or(1) as usize) {
                bits |= 1 << v;
            }
        }
        if self.max == 7 && bits & (1 << 7) != 0 {
            bits = (bits & !(1 << 7)) | 1;
        }
        Ok((bits, star))
    }
}

fn has(bits: u64, v: u32) -> bool {
    bits & (1 << v) != 0
}

fn midnight(d: NaiveDate) -> Option<DateTime<Utc>> {
    Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?))
}

fn month_start(year: i32, month: u32) -> Option<DateTime<Utc>> {
    midnight(NaiveDate::from_ymd_opt(year, month, 1)?)
}

/// How far a search goes before it gives up (29 February can be 8 years away).
const SEARCH_YEARS: i32 = 10;

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        let spec = match s.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => return Err(format!("unknown descriptor {s:?}")),
            _ => s,
        };
        let fields: Vec<&str> = spec.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!("expected 5 fields, found {}: {s:?}", fields.len()));
        };
        let (days, day_star) = DAY.parse(day)?;
        let (weekdays, weekday_star) = WEEKDAY.parse(weekday)?;
        Ok(Schedule {
            minutes: MINUTE.parse(minute)?.0,
            hours: HOUR.parse(hour)?.0,
            days,
            months: MONTH.parse(month)?.0,
            weekdays,
            any_day: day_star || weekday_star,
        })
    }

    fn day_matches(&self, t: DateTime<Utc>) -> bool {
        let day = has(self.days, t.day());
        let weekday = has(self.weekdays, t.weekday().num_days_from_sunday());
        if self.any_day {
            day && weekday
        } else {
            day || weekday
        }
    }

    /// The first schedule time after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let minute = chrono::Duration::minutes(1);
        let mut t = t.with_second(0)?.with_nanosecond(0)? + minute;
        let limit = t.year() + SEARCH_YEARS;
        while t.year() <= limit {
            if !has(self.months, t.month()) {
                t = match t.month() {
                    12 => month_start(t.year() + 1, 1)?,
                    m => month_start(t.year(), m + 1)?,
                };
            } else if !self.day_matches(t) {
                t = midnight(t.date_naive().succ_opt()?)?;
            } else if !has(self.hours, t.hour()) {
                t = t.with_minute(0)? + chrono::Duration::hours(1);
            } else if !has(self.minutes, t.minute()) {
                t += minute;
            } else {
                return Some(t);
            }
        }
        None
    }

    /// The last schedule time at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let minute = chrono::Duration::minutes(1);
        let mut t = t.with_second(0)?.with_nanosecond(0)?;
        let limit = t.year() - SEARCH_YEARS;
        while t.year() >= limit {
            // Each step goes to the last minute before the unit that failed.
            if !has(self.months, t.month()) {
                t = month_start(t.year(), t.month())? - minute;
            } else if !self.day_matches(t) {
                t = midnight(t.date_naive())? - minute;
            } else if !has(self.hours, t.hour()) {
                t = t.with_minute(0)? - minute;
            } else if !has(self.minutes, t.minute()) {
                t -= minute;
            } else {
                return Some(t);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn bits(values: &[u32]) -> u64 {
        values.iter().fold(0, |b, v| b | 1 << v)
    }

    #[test]
    fn fields_parse_steps_ranges_lists_and_names() {
        let s = Schedule::parse("*/15 9-17/4 1,15,20-22 jan,JUL-aug MON-fri").unwrap();
        assert_eq!(s.minutes, bits(&[0, 15, 30, 45]));
        assert_eq!(s.hours, bits(&[9, 13, 17]));
        assert_eq!(s.days, bits(&[1, 15, 20, 21, 22]));
        assert_eq!(s.months, bits(&[1, 7, 8]));
        assert_eq!(s.weekdays, bits(&[1, 2, 3, 4, 5]));
        assert!(!s.any_day);
        let s = Schedule::parse("5/20 0 * * 7").unwrap();
        assert_eq!(s.minutes, bits(&[5, 25, 45]));
        assert_eq!(s.weekdays, bits(&[0]), "7 is Sunday");
        assert!(s.any_day);
        assert_eq!(
            Schedule::parse("@hourly").unwrap(),
            Schedule::parse("0 * * * *").unwrap()
        );
        assert_eq!(
            Schedule::parse("@annually").unwrap(),
            Schedule::parse("0 0 1 1 *").unwrap()
        );
        assert_eq!(
            Schedule::parse("@weekly").unwrap(),
            Schedule::parse("0 0 * * sun").unwrap()
        );
        for bad in [
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "*/0 * * * *",
            "5-3 * * * *",
            "a * * * *",
            "1,,2 * * * *",
            "@every 5m",
            "",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn next_and_last_times() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        let t = at("2024-01-01T10:07:30Z");
        assert_eq!(s.next_after(t), Some(at("2024-01-01T10:15:00Z")));
        assert_eq!(s.last_at_or_before(t), Some(at("2024-01-01T10:00:00Z")));
        // A schedule time itself: next is strictly after, last includes it.
        let t = at("2024-01-01T10:15:00Z");
        assert_eq!(s.next_after(t), Some(at("2024-01-01T10:30:00Z")));
        assert_eq!(s.last_at_or_before(t), Some(t));

        let every = Schedule::parse("* * * * *").unwrap();
        assert_eq!(
            every.next_after(at("2024-12-31T23:59:59.5Z")),
            Some(at("2025-01-01T00:00:00Z"))
        );
        assert_eq!(
            every.last_at_or_before(at("2024-03-01T00:00:59Z")),
            Some(at("2024-03-01T00:00:00Z"))
        );

        let yearly = Schedule::parse("30 23 31 12 *").unwrap();
        assert_eq!(
            yearly.next_after(at("2024-12-31T23:30:00Z")),
            Some(at("2025-12-31T23:30:00Z"))
        );
        assert_eq!(
            yearly.last_at_or_before(at("2025-06-01T00:00:00Z")),
            Some(at("2024-12-31T23:30:00Z"))
        );

        let leap = Schedule::parse("0 0 29 2 *").unwrap();
        assert_eq!(
            leap.next_after(at("2025-03-01T00:00:00Z")),
            Some(at("2028-02-29T00:00:00Z"))
        );
        assert_eq!(
            leap.last_at_or_before(at("2025-03-01T00:00:00Z")),
            Some(at("2024-02-29T00:00:00Z"))
        );
        assert_eq!(
            Schedule::parse("0 0 30 2 *")
                .unwrap()
                .next_after(at("2025-01-01T00:00:00Z")),
            None
        );

        // Weekday 1 (Monday) with a `*` day of month: Mondays only.
        let mondays = Schedule::parse("0 9 * * 1").unwrap();
        assert_eq!(
            mondays.next_after(at("2024-05-01T00:00:00Z")),
            Some(at("2024-05-06T09:00:00Z"))
        );
        // Both restricted: the 13th or a Friday.
        let either = Schedule::parse("0 0 13 * fri").unwrap();
        assert_eq!(
            either.next_after(at("2024-05-01T00:00:00Z")),
            Some(at("2024-05-03T00:00:00Z"))
        );
        assert_eq!(
            either.next_after(at("2024-05-11T00:00:00Z")),
            Some(at("2024-05-13T00:00:00Z"))
        );
        assert_eq!(
            either.last_at_or_before(at("2024-05-12T23:59:00Z")),
            Some(at("2024-05-10T00:00:00Z"))
        );
    }
}
