//! The masters' and an agent's `/metrics` as a real Prometheus sees them:
//! the real `promtool check metrics` finds nothing to say about either, and
//! the series the ecosystem's dashboards and alerts use are there with
//! true values: etcd's for the store, kube-apiserver's for the API,
//! kube-state-metrics' for object state (on the leader only, and gone with
//! a deleted object), cAdvisor's for the agent's containers.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::agents::{create_token, node_ready, one_at_a_time, require_images, SETTLE};
use common::{eventually, kubectl, kubectl_stdin, Cluster};

const OBJECTS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: ticker, namespace: default}
spec:
  containers:
  - name: tick
    image: busybox:local
    imagePullPolicy: Never
    # Some CPU time to count, then idle.
    command: [sh, -c, 'i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; sleep 3600']
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: httpd
        image: busybox:local
        imagePullPolicy: Never
        command: [sleep, "3600"]
"#;

async fn scrape(url: &str) -> String {
    let resp = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("scraping {url}: {e}"));
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.text().await.expect("the exposition text")
}

/// `promtool check metrics` on `text`: its complaints (empty when clean).
fn promtool(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; deploy/test installs it)");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        said
    } else {
        format!("exit {}: {said}", out.status)
    }
}

/// The value of the sample of `name` whose labels include all of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|(_, v)| v.parse().ok())
}

fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

fn ok((good, out, err): (bool, String, String)) -> String {
    assert!(good, "kubectl failed: {err}\n{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_promtool_clean_and_named_as_the_ecosystem_expects() {
    let _serial = one_at_a_time().await;
    require_images();
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let follower = (leader + 1) % 3;
    let kc = cluster.kubeconfig(leader);

    let token = create_token(&cluster, &[]);
    let mut agent = cluster.join("m1", &token).expect("joining");
    agent.run(&["--stats-interval", "1s"]);
    let node = agent.name.clone();
    eventually("the node Ready", SETTLE, || {
        std::future::ready((node_ready(&kc, &node) == "True").then_some(()))
    })
    .await;
    ok(kubectl_stdin(&kc, &["apply", "-f", "-"], Some(OBJECTS)));
    eventually("ticker Running and web available", SETTLE, || {
        let phase = kubectl(
            &kc,
            &["get", "pod", "ticker", "-o", "jsonpath={.status.phase}"],
        )
        .1;
        let available = kubectl(
            &kc,
            &[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.status.availableReplicas}",
            ],
        )
        .1;
        std::future::ready((phase == "Running" && available == "1").then_some(()))
    })
    .await;
    let uid = ok(kubectl(
        &kc,
        &["get", "pod", "ticker", "-o", "jsonpath={.metadata.uid}"],
    ));

    // kube-apiserver's request counter counts a kubectl request: a LIST
    // of configmaps on a follower, where nothing else asks for them.
    let follower_kc = cluster.kubeconfig(follower);
    let list = [
        ("verb", "LIST"),
        ("resource", "configmaps"),
        ("code", "200"),
    ];
    let before = sum(
        &scrape(&cluster.metrics_url(follower)).await,
        "apiserver_request_total",
        &list,
    );
    ok(kubectl(
        &follower_kc,
        &["get", "configmaps", "-n", "default"],
    ));
    let after = sum(
        &scrape(&cluster.metrics_url(follower)).await,
        "apiserver_request_total",
        &list,
    );
    assert_eq!(
        after - before,
        1.0,
        "one LIST counted ({before} -> {after})"
    );

    // Every master's exposition is clean.
    for i in 0..3 {
        let text = scrape(&cluster.metrics_url(i)).await;
        assert_eq!(promtool(&text), "", "master {i}'s /metrics:\n{text}");
    }

    let text = scrape(&cluster.metrics_url(leader)).await;
    let follower_text = scrape(&cluster.metrics_url(follower)).await;
    // The store as etcd.
    assert_eq!(value(&text, "etcd_server_has_leader", &[]), Some(1.0));
    assert_eq!(
        value(&follower_text, "etcd_server_has_leader", &[]),
        Some(1.0)
    );
    assert_eq!(value(&text, "etcd_server_is_leader", &[]), Some(1.0));
    assert_eq!(
        value(&follower_text, "etcd_server_is_leader", &[]),
        Some(0.0)
    );
    assert!(value(&text, "etcd_server_leader_changes_seen_total", &[]) >= Some(1.0));
    let committed = value(&text, "etcd_server_proposals_committed_total", &[]);
    let applied = value(&text, "etcd_server_proposals_applied_total", &[]);
    assert!(committed > Some(10.0), "{committed:?}");
    assert!(applied > Some(10.0) && applied <= committed, "{applied:?}");
    assert!(value(&text, "etcd_server_proposals_pending", &[]).is_some());
    for h in [
        "etcd_disk_wal_fsync_duration_seconds_count",
        "etcd_disk_backend_commit_duration_seconds_count",
    ] {
        assert!(value(&text, h, &[]) > Some(0.0), "{h} in\n{text}");
    }
    assert!(
        value(
            &text,
            "etcd_disk_wal_fsync_duration_seconds_bucket",
            &[("le", "8.192")]
        )
        .is_some(),
        "etcd's buckets"
    );
    assert!(value(&text, "etcd_mvcc_db_total_size_in_bytes", &[]) > Some(0.0));
    assert!(text.contains("etcd_server_id{server_id=\""), "{text}");
    // The API as kube-apiserver.
    assert!(
        value(
            &text,
            "apiserver_request_duration_seconds_bucket",
            &[("verb", "POST"), ("resource", "pods"), ("le", "1")]
        )
        .is_some(),
        "{text}"
    );
    // Object state as kube-state-metrics, on the leader only.
    let pod = [
        ("namespace", "default"),
        ("pod", "ticker"),
        ("uid", uid.as_str()),
    ];
    let phase = |text: &str, p: &str| {
        let mut labels = pod.to_vec();
        labels.push(("phase", p));
        value(text, "kube_pod_status_phase", &labels)
    };
    assert_eq!(phase(&text, "Running"), Some(1.0), "{text}");
    assert_eq!(phase(&text, "Pending"), Some(0.0));
    assert_eq!(phase(&text, "Failed"), Some(0.0));
    assert_eq!(
        value(
            &text,
            "kube_node_status_condition",
            &[("node", &node), ("condition", "Ready"), ("status", "true")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "kube_node_status_condition",
            &[("node", &node), ("condition", "Ready"), ("status", "false")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "kube_deployment_status_replicas_available",
            &[("namespace", "default"), ("deployment", "web")]
        ),
        Some(1.0)
    );
    assert!(
        !follower_text.contains("kube_pod_status_phase{"),
        "a follower serves no object state"
    );

    // The agent's containers as cAdvisor.
    let agent_url = format!("http://{}/metrics", agent.metrics);
    let tick = [
        ("namespace", "default"),
        ("pod", "ticker"),
        ("container", "tick"),
    ];
    let (agent_url, tick) = (&agent_url, &tick);
    let agent_text = eventually(
        "the ticker's container sampled",
        SETTLE,
        move || async move {
            let text = scrape(agent_url).await;
            value(&text, "container_cpu_usage_seconds_total", tick)
                .is_some_and(|cpu| cpu > 0.0)
                .then_some(text)
        },
    )
    .await;
    assert_eq!(
        promtool(&agent_text),
        "",
        "the agent's /metrics:\n{agent_text}"
    );
    let memory = value(&agent_text, "container_memory_working_set_bytes", tick);
    assert!(memory > Some(0.0), "{memory:?}");

    // A deleted pod's series go with it, on the masters and the agent.
    ok(kubectl(
        &kc,
        &["delete", "pod", "ticker", "--grace-period=1"],
    ));
    let (master_url, phase) = (cluster.metrics_url(leader), &phase);
    let master_url = &master_url;
    eventually("the ticker's series gone", SETTLE, move || async move {
        let master = scrape(master_url).await;
        let agent = scrape(agent_url).await;
        (phase(&master, "Running").is_none()
            && value(&agent, "container_memory_working_set_bytes", tick).is_none())
        .then_some(())
    })
    .await;
    drop(agent);
}
