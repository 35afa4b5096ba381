//! The Job and CronJob controllers on a real 3-master cluster, with fake
//! nodes (tests/common/fake_nodes.rs: the `skiff.test/phase` label makes a
//! pod succeed or fail, `skiff.test/hold` keeps it from starting) and the
//! real kubectl.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::fake_nodes::{FakeNodes, Kube};
use common::{eventually, kubectl, kubectl_stdin, Cluster};
use serde_json::{json, Value};

/// A Job manifest; `fields` are more lines of its spec.
fn job(name: &str, fields: &[&str], labels: &str) -> String {
    let extra_spec = fields.join("\n  ");
    format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}, namespace: default}}
spec:
  {extra_spec}
  template:
    metadata: {{labels: {{{labels}}}}}
    spec:
      restartPolicy: Never
      containers:
      - {{name: c, image: busybox:1}}
"#
    )
}

async fn get_job(kube: &Kube, name: &str) -> Option<Value> {
    kube.get(&format!("/apis/batch/v1/namespaces/default/jobs/{name}"))
        .await
        .ok()
}

async fn pods_of(kube: &Kube, job: &str) -> Vec<Value> {
    kube.items(&format!(
        "/api/v1/namespaces/default/pods?labelSelector=batch.kubernetes.io%2Fjob-name%3D{job}"
    ))
    .await
}

/// The job's condition of `type_`, if it is True.
fn condition(job: &Value, type_: &str) -> Option<Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

fn time(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The API's own namespaces are created just after start: wait for `default`.
async fn default_namespace(kube: &Kube) {
    eventually("the default namespace", Duration::from_secs(20), || async {
        kube.get("/api/v1/namespaces/default")
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_runs_its_completions_at_most_parallelism_at_a_time() {
    let cluster = Cluster::start(3, &[]).await;
    let kc = cluster.kubeconfig(0);
    let kube = Kube::new(&kc);
    let _nodes = FakeNodes::start(&kube, &["n1", "n2"]).await;
    default_namespace(&kube).await;

    // Held pods do not start, so the first round stays visible.
    let manifest = job(
        "count",
        &["completions: 3", "parallelism: 2"],
        r#"skiff.test/phase: Succeeded, skiff.test/hold: "true""#,
    );
    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "{err}");
    let first = eventually("2 active pods", Duration::from_secs(30), || async {
        let j = get_job(&kube, "count").await?;
        (j["status"]["active"] == 2).then_some(())?;
        Some(pods_of(&kube, "count").await)
    })
    .await;
    assert_eq!(first.len(), 2, "parallelism 2: {first:#?}");
    let j = get_job(&kube, "count").await.expect("job");
    let uid = j["metadata"]["uid"].as_str().expect("uid").to_string();
    for p in &first {
        let labels = &p["metadata"]["labels"];
        assert_eq!(labels["job-name"], "count");
        assert_eq!(labels["controller-uid"], uid.as_str());
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid.as_str());
        let owner = &p["metadata"]["ownerReferences"][0];
        assert!(
            owner["kind"] == "Job" && owner["uid"] == uid.as_str() && owner["controller"] == true
        );
        assert_eq!(
            p["metadata"]["finalizers"][0],
            "batch.kubernetes.io/job-tracking"
        );
    }

    // Let every pod (the third too, once it comes) run to success.
    let done = eventually("the job to complete", Duration::from_secs(60), || async {
        // (Fails harmlessly when no pod is held any more.)
        let _ = kubectl(
            &kc,
            &[
                "label",
                "pods",
                "-l",
                "job-name=count,skiff.test/hold",
                "skiff.test/hold-",
            ],
        );
        let j = get_job(&kube, "count").await?;
        condition(&j, "Complete").map(|_| j)
    })
    .await;
    assert_eq!(done["status"]["succeeded"], 3, "{done:#}");
    assert!(
        done["status"]["failed"].is_null() && done["status"]["active"].is_null(),
        "{done:#}"
    );
    assert!(time(&done["status"]["completionTime"]) >= time(&done["status"]["startTime"]));
    let pods = pods_of(&kube, "count").await;
    assert_eq!(pods.len(), 3, "exactly `completions` pods: {pods:#?}");
    assert!(pods.iter().all(|p| phase(p) == "Succeeded"), "{pods:#?}");
    assert!(
        pods.iter().all(|p| p["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty())),
        "counted pods are released: {pods:#?}"
    );

    let (ok, out, err) = kubectl(&kc, &["get", "job", "count"]);
    assert!(
        ok && out.contains("Complete") && out.contains("3/3"),
        "{out}{err}"
    );
    let out = eventually("the events", Duration::from_secs(10), || async {
        let (_, out, _) = kubectl(&kc, &["describe", "job", "count"]);
        (out.contains("SuccessfulCreate") && out.contains("Completed")).then_some(out)
    })
    .await;
    assert!(out.contains("Job completed"), "{out}");

    // The server chose the job's selector: its uid, which the template's
    // labels carry beside the job's name and the user's own labels.
    let count = get_job(&kube, "count").await.expect("job");
    assert_eq!(
        count["spec"]["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    );
    let labels = &count["spec"]["template"]["metadata"]["labels"];
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
        ("controller-uid", uid.as_str()),
        ("batch.kubernetes.io/job-name", "count"),
        ("job-name", "count"),
        ("skiff.test/phase", "Succeeded"),
    ] {
        assert_eq!(labels[k], v, "{labels}");
    }
    // ... and it may not change.
    let (ok, _, err) = kubectl(
        &kc,
        &[
            "patch",
            "job",
            "count",
            "--type=merge",
            "-p",
            r#"{"spec":{"selector":{"matchLabels":{"app":"other"}}}}"#,
        ],
    );
    assert!(
        !ok && err.contains("spec.selector") && err.contains("field is immutable"),
        "{err}"
    );
    // A selector that does not select the template's pods: 422, and
    // nothing stored.
    let mismatch = job(
        "mismatch",
        &["manualSelector: true", "selector: {matchLabels: {app: a}}"],
        "app: b",
    );
    let cause = r#"spec.template.metadata.labels: Invalid value: map[string]string{"app":"b"}: `selector` does not match template `labels`"#;
    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&mismatch));
    assert!(
        !ok && err.contains(r#"The Job "mismatch" is invalid: "#) && err.contains(cause),
        "{err}"
    );
    let body: Value = serde_yaml::from_str(&mismatch).expect("manifest");
    let refused = kube
        .post("/apis/batch/v1/namespaces/default/jobs", &body)
        .await
        .expect_err("a mismatched selector");
    assert_eq!(
        refused,
        (422, format!(r#"Job.batch "mismatch" is invalid: {cause}"#))
    );
    assert!(matches!(
        kube.get("/apis/batch/v1/namespaces/default/jobs/mismatch")
            .await,
        Err((404, _))
    ));
    // A selector of the user's needs manualSelector, as in Kubernetes.
    let unmarked = job("unmarked", &["selector: {matchLabels: {app: a}}"], "app: a");
    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&unmarked));
    assert!(
        !ok && err.contains("`selector` not auto-generated"),
        "{err}"
    );
    // With it, the selector is the user's, unchanged, and the job runs.
    let manual = job(
        "manual",
        &[
            "manualSelector: true",
            "selector: {matchLabels: {app: manual}}",
        ],
        "app: manual, skiff.test/phase: Succeeded",
    );
    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&manual));
    assert!(ok, "{err}");
    let done = eventually(
        "the manual job to complete",
        Duration::from_secs(30),
        || async {
            let j = get_job(&kube, "manual").await?;
            condition(&j, "Complete").map(|_| j)
        },
    )
    .await;
    assert_eq!(
        done["spec"]["selector"],
        json!({"matchLabels": {"app": "manual"}})
    );
    assert!(
        done["spec"]["template"]["metadata"]["labels"]["controller-uid"].is_null(),
        "{done:#}"
    );

    // Deleting a job with running (tracked) pods takes the pods with it.
    let manifest = job(
        "held",
        &["parallelism: 2", "completions: 4"],
        r#"skiff.test/hold: "true""#,
    );
    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "{err}");
    eventually("2 held pods", Duration::from_secs(30), || async {
        (pods_of(&kube, "held").await.len() == 2).then_some(())
    })
    .await;
    let (ok, _, err) = kubectl(&kc, &["delete", "job", "held"]);
    assert!(ok, "{err}");
    eventually("the held pods to go", Duration::from_secs(30), || async {
        pods_of(&kube, "held").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_job_backs_off_and_stops_at_its_backoff_limit() {
    let cluster = Cluster::start(3, &[]).await;
    let kc = cluster.kubeconfig(1);
    let kube = Kube::new(&kc);
    let _nodes = FakeNodes::start(&kube, &["n1"]).await;
    default_namespace(&kube).await;

    let manifest = job("flaky", &["backoffLimit: 2"], "skiff.test/phase: Failed");
    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "{err}");
    let failed = eventually("the job to fail", Duration::from_secs(60), || async {
        let j = get_job(&kube, "flaky").await?;
        condition(&j, "Failed").map(|c| (j, c))
    })
    .await;
    let (j, c) = failed;
    assert_eq!(c["reason"], "BackoffLimitExceeded", "{j:#}");
    assert_eq!(c["message"], "Job has reached the specified backoff limit");
    assert_eq!(j["status"]["failed"], 3, "{j:#}");
    assert!(
        j["status"]["succeeded"].is_null() && j["status"]["active"].is_null(),
        "{j:#}"
    );
    assert!(condition(&j, "Complete").is_none());

    let mut pods = pods_of(&kube, "flaky").await;
    assert_eq!(pods.len(), 3, "backoffLimit 2 allows 3 pods: {pods:#?}");
    assert!(pods.iter().all(|p| phase(p) == "Failed"), "{pods:#?}");
    // Replacements wait 2 s, then 4 s (creation times are whole seconds).
    pods.sort_by_key(|p| time(&p["metadata"]["creationTimestamp"]));
    let created: Vec<i64> = pods
        .iter()
        .map(|p| time(&p["metadata"]["creationTimestamp"]).timestamp())
        .collect();
    assert!(
        created[1] - created[0] >= 1,
        "no backoff before the 2nd pod: {created:?}"
    );
    assert!(
        created[2] - created[1] >= 3,
        "no doubled backoff before the 3rd: {created:?}"
    );

    let (ok, out, err) = kubectl(&kc, &["get", "jobs"]);
    assert!(
        ok && out.contains("flaky") && out.contains("Failed"),
        "{out}{err}"
    );
    let out = eventually("the events", Duration::from_secs(10), || async {
        let (_, out, _) = kubectl(&kc, &["describe", "job", "flaky"]);
        out.contains("BackoffLimitExceeded").then_some(out)
    })
    .await;
    assert!(out.contains("SuccessfulCreate"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cronjob_fires_on_its_schedule() {
    // The controllers' clock runs `offset` seconds ahead, so that the
    // CronJob can be created ~10 s before one of their minutes begins. An
    // offset under 50 s puts no minute boundary between the creation (by the
    // API's clock) and the controllers' now: nothing may run early.
    const SETUP_SECS: i64 = 6;
    let mut offset = (50 - (Utc::now().timestamp() + SETUP_SECS)).rem_euclid(60);
    if offset > 40 {
        offset -= 30;
    }
    let offset_arg = offset.to_string();
    let cluster = Cluster::start(3, &["--controller-clock-offset-secs", &offset_arg]).await;
    let kc = cluster.kubeconfig(2);
    let kube = Kube::new(&kc);
    let _nodes = FakeNodes::start(&kube, &["n1"]).await;
    default_namespace(&kube).await;

    // Line up: the controllers' clock at :50 (a wait of a few seconds).
    let ms = (Utc::now().timestamp_millis() + offset * 1000).rem_euclid(60_000);
    tokio::time::sleep(Duration::from_millis(
        (50_000 - ms).rem_euclid(60_000) as u64
    ))
    .await;
    let cronjob = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick, namespace: default}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        metadata: {labels: {skiff.test/phase: Succeeded}}
        spec:
          restartPolicy: Never
          containers:
          - {name: c, image: busybox:1}
"#;
    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(cronjob));
    assert!(ok, "{err}");
    let cj = kube
        .get("/apis/batch/v1/namespaces/default/cronjobs/tick")
        .await
        .expect("cronjob");
    let created = time(&cj["metadata"]["creationTimestamp"]).timestamp();
    let second = (created + offset).rem_euclid(60);
    assert!(
        (45..=55).contains(&second) && offset < second,
        "created at controller second {second} with offset {offset}"
    );
    // The controllers' next minute.
    let minute = (created + offset).div_euclid(60) + 1;
    let name = format!("tick-{minute}");
    let scheduled = DateTime::<Utc>::from_timestamp(minute * 60, 0).expect("time");

    // Nothing runs before the schedule.
    let (ok, out, err) = kubectl(&kc, &["get", "jobs", "-o", "name"]);
    assert!(ok, "{err}");
    if Utc::now().timestamp() + offset < minute * 60 - 1 {
        assert!(out.trim().is_empty(), "a job before its minute: {out}");
    }

    let deadline = Instant::now() + Duration::from_secs(40);
    let job = loop {
        let (ok, out, _) = kubectl(&kc, &["get", "job", &name, "-o", "json"]);
        if ok {
            break serde_json::from_str::<Value>(&out).expect("job json");
        }
        if Instant::now() > deadline {
            let (_, state, _) = kubectl(&kc, &["get", "jobs,cronjobs,events", "-o", "yaml"]);
            let leader = cluster.wait_leader(Duration::from_secs(5)).await;
            panic!(
                "no job {name} (controllers' now {}): {state}\nleader log:\n{}",
                Utc::now().timestamp() + offset,
                tail(&cluster.log(leader), 100)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"],
        scheduled.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let owner = &job["metadata"]["ownerReferences"][0];
    assert!(owner["kind"] == "CronJob" && owner["name"] == "tick" && owner["controller"] == true);
    // Its selector and labels were set as for any job.
    let uid = job["metadata"]["uid"].as_str().expect("uid");
    assert_eq!(
        job["spec"]["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    );
    let labels = &job["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        labels["batch.kubernetes.io/job-name"],
        name.as_str(),
        "{labels}"
    );
    assert_eq!(labels["skiff.test/phase"], "Succeeded", "{labels}");
    // Created once the controllers' clock reached the minute, not before
    // (the creation time is truncated to a second).
    let job_created = time(&job["metadata"]["creationTimestamp"]).timestamp();
    assert!(
        job_created + offset >= minute * 60 - 1,
        "created {job_created}, offset {offset}"
    );
    // No job for an earlier minute.
    let jobs = kube.items("/apis/batch/v1/namespaces/default/jobs").await;
    for j in &jobs {
        let n = j["metadata"]["name"].as_str().unwrap_or("");
        let m: i64 = n
            .trim_start_matches("tick-")
            .parse()
            .expect("tick-<minute>");
        assert!(m >= minute, "a job for an earlier minute: {n}");
    }

    let cj = kube
        .get("/apis/batch/v1/namespaces/default/cronjobs/tick")
        .await
        .expect("cronjob");
    let last = time(&cj["status"]["lastScheduleTime"]);
    assert_eq!(
        last.timestamp() % 60,
        0,
        "lastScheduleTime is minute-aligned"
    );
    assert!(last >= scheduled, "{cj:#}");

    // The job's pod succeeds: the CronJob sees it and records the success.
    let cj = eventually("lastSuccessfulTime", Duration::from_secs(40), || async {
        let cj = kube
            .get("/apis/batch/v1/namespaces/default/cronjobs/tick")
            .await
            .ok()?;
        cj["status"]["lastSuccessfulTime"].is_string().then_some(cj)
    })
    .await;
    assert!(time(&cj["status"]["lastSuccessfulTime"]) >= scheduled);
    let (ok, out, err) = kubectl(&kc, &["get", "cronjobs"]);
    assert!(
        ok && out.contains("tick") && out.contains("* * * * *"),
        "{out}{err}"
    );
    let out = eventually("the events", Duration::from_secs(10), || async {
        let (_, out, _) = kubectl(&kc, &["describe", "cronjob", "tick"]);
        (out.contains("SuccessfulCreate") && out.contains("SawCompletedJob")).then_some(out)
    })
    .await;
    assert!(out.contains(&name), "{out}");
}
