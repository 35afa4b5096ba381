//! Faults on the node side, with real agents, real Docker engines and the
//! real kubectl.
//!
//! A StatefulSet pod runs at most once, even when its node is cut off from
//! the masters and comes back: the chaos harness's node-partition nemesis
//! (a node host's link down) against two real nodes, each a host of its
//! own with its own Docker engine, and its at-most-one checker over both
//! engines' container histories.
//!
//! While the node is cut off, the node controller marks it unreachable and
//! evicts the pod; the pod must stay (Terminating, same uid) until its node
//! confirms its containers are gone, so the StatefulSet makes no second
//! one. Once the node is back, it stops the old pod, confirms, and only
//! then does a new one start. Twice, on whichever node runs the pod.
//!
//! Then the engine of the node running the pod is killed: the node goes
//! NotReady with the runtime's error, is tainted, and the pod is evicted.
//!
//! And a pod status the masters fail to write (they have lost their
//! quorum) is sent again by the agent until it lands; a node under memory
//! pressure is tainted and evicts its pod; a deleted pod's final report,
//! once acknowledged, is not sent to the next session.

mod common;

use std::time::{Duration, Instant};

use chaos_tests::checker::at_most_one;
use chaos_tests::engines::Recorder;
use chaos_tests::node_partition::NodePartition;
use common::agents::{create_token, node_ready, one_at_a_time, require_images, SETTLE};
use common::hosts::{Lan, NodeHost};
use common::{eventually, kubectl, kubectl_stdin, Cluster};
use serde_json::Value;

const STATEFULSET: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: one}
spec:
  serviceName: one
  replicas: 1
  selector: {matchLabels: {app: one}}
  template:
    metadata: {labels: {app: one}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - {name: c, image: busybox:local, imagePullPolicy: Never, command: [sleep, "3600"]}
"#;

/// How long the pod must stay as it is while its node is cut off, after
/// it was marked for deletion.
const HOLD: Duration = Duration::from_secs(8);

fn pod(kc: &std::path::Path) -> Option<Value> {
    let (ok, out, _) = kubectl(kc, &["get", "pod", "one-0", "-o", "json"]);
    ok.then(|| serde_json::from_str(&out).ok()).flatten()
}

fn uid(p: &Value) -> String {
    p["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

fn running_on(p: &Value) -> Option<String> {
    let live = p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running";
    live.then(|| p["spec"]["nodeName"].as_str().map(str::to_string))
        .flatten()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statefulset_pod_runs_at_most_once_across_node_partitions() {
    let _one = one_at_a_time().await;
    require_images();
    let lan = Lan::up("p", 3);
    // Unreachable after 4 s without a heartbeat, pods evicted 2 s later.
    let flags = [
        "--node-monitor-grace-period-secs",
        "4",
        "--default-eviction-timeout-secs",
        "2",
    ];
    let cluster = Cluster::start_with_agents_on(3, &flags, &lan.master_ips(3)).await;
    let kc = cluster.kubeconfig(0);
    let server = format!("{}:6444", lan.master_ips(3)[0]);
    let join = create_token(&cluster, &["--agent-server", &server]);
    let hosts = [
        NodeHost::up(&lan, "p", 1, cluster.dir.path()),
        NodeHost::up(&lan, "p", 2, cluster.dir.path()),
    ];
    let mut agents = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let mut a = cluster
            .join_in(&format!("p{}", i + 1), &join, h)
            .expect("node joins");
        a.run(&["--node-lease-duration", "4s"]);
        agents.push(a);
    }
    for a in &agents {
        eventually(&format!("{} Ready", a.name), SETTLE, || {
            std::future::ready((node_ready(&kc, &a.name) == "True").then_some(()))
        })
        .await;
    }
    let engines: Vec<(String, String)> = agents
        .iter()
        .zip(&hosts)
        .map(|(a, h)| (a.name.clone(), h.docker_host.clone()))
        .collect();
    let recorder = Recorder::start(&engines).expect("following the engines");
    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(STATEFULSET));
    assert!(ok, "{err}");

    let result = std::panic::AssertUnwindSafe(async {
        let mut uids = Vec::new();
        for round in 1..=2 {
            let (first, node) = eventually("one-0 running", SETTLE, || {
                let p = pod(&kc);
                std::future::ready(p.and_then(|p| {
                    let on = running_on(&p)?;
                    (!uids.contains(&uid(&p))).then(|| (uid(&p), on))
                }))
            })
            .await;
            uids.push(first.clone());
            let i = agents
                .iter()
                .position(|a| a.name == node)
                .expect("a node of ours");
            eprintln!("round {round}: one-0 ({first}) runs on {node}; cutting it off");
            let cut = NodePartition::inject(&hosts[i].name).expect("partition");
            eventually("one-0 marked for deletion", SETTLE, || {
                let p = pod(&kc);
                std::future::ready(
                    p.filter(|p| p["metadata"]["deletionTimestamp"].is_string())
                        .map(|_| ()),
                )
            })
            .await;
            // Evicted, but its node has not confirmed anything: it stays.
            let until = Instant::now() + HOLD;
            while Instant::now() < until {
                let p = pod(&kc).expect("one-0 stays while its node is cut off");
                assert_eq!(uid(&p), first, "a second one-0 while the first may run");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            cut.heal().expect("heal");
            eprintln!("round {round}: {node} is back");
        }
        // The last one runs; then judge the whole history.
        eventually("the last one-0 running", SETTLE, || {
            let p = pod(&kc);
            std::future::ready(
                p.filter(|p| running_on(p).is_some() && !uids.contains(&uid(p)))
                    .map(|_| ()),
            )
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        uids
    });
    let outcome = futures::FutureExt::catch_unwind(result).await;
    let events = recorder.stop();
    let uids = match outcome {
        Ok(uids) => uids,
        Err(panic) => {
            for a in &agents {
                let log = a.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- last lines of {}'s log", a.name);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
            std::panic::resume_unwind(panic);
        }
    };
    let violations = at_most_one::check(&events);
    assert!(
        violations.is_empty(),
        "{}",
        violations
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The checker had something to judge: each uid ran, one after another.
    let runs = at_most_one::runs(&events);
    let ran = runs.get("default/one-0").cloned().unwrap_or_default();
    for u in &uids {
        assert!(
            ran.iter().any(|r| &r.pod_uid == u),
            "no container of one-0 {u} seen in {ran:?}"
        );
    }

    // A node whose engine dies goes NotReady, saying why, and its pods are
    // evicted (marked for deletion: the node cannot confirm anything yet).
    let p = pod(&kc).expect("one-0");
    let node = running_on(&p).expect("one-0 runs");
    let i = agents
        .iter()
        .position(|a| a.name == node)
        .expect("a node of ours");
    let pid_file = format!("/run/skiff/{}/docker.pid", hosts[i].name);
    let pid = std::fs::read_to_string(&pid_file).expect("the engine's pid file");
    let killed = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let message = eventually("the node NotReady with the runtime's error", SETTLE, || {
        let (_, out, _) = kubectl(&kc, &["get", "node", &node, "-o", "json"]);
        let n: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let ready = n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .cloned()
            .unwrap_or(Value::Null);
        let tainted = n["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "node.kubernetes.io/not-ready" && t["effect"] == "NoExecute");
        std::future::ready(
            (ready["status"] == "False" && ready["reason"] == "KubeletNotReady" && tainted)
                .then(|| ready["message"].as_str().unwrap_or("").to_string()),
        )
    })
    .await;
    assert!(
        message.starts_with("container runtime is down"),
        "{message}"
    );
    eventually(
        "one-0 evicted from the node whose engine died",
        SETTLE,
        || {
            std::future::ready(
                pod(&kc)
                    .filter(|q| uid(q) == uid(&p) && q["metadata"]["deletionTimestamp"].is_string())
                    .map(|_| ()),
            )
        },
    )
    .await;
    for a in &mut agents {
        a.kill();
    }
}

/// The value of metric `name` in Prometheus text from `url` (summed over
/// its labels), or None if it is not there.
async fn metric(url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A counter's value: 0 until it first counts.
async fn counter(url: &str, name: &str) -> f64 {
    metric(url, name).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_status_the_masters_could_not_write_lands_once_they_can() {
    let _one = one_at_a_time().await;
    require_images();
    let cluster = Cluster::start(3, &[]).await;
    let join = create_token(&cluster, &[]);
    let mut agent = cluster.join("r1", &join).expect("node joins");
    agent.run(&[]);
    let kc = cluster.kubeconfig(0);
    eventually("the node Ready", SETTLE, || {
        std::future::ready((node_ready(&kc, &agent.name) == "True").then_some(()))
    })
    .await;
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: exits}}\nspec:\n  nodeName: {}\n  restartPolicy: Never\n  containers:\n  - {{name: c, image: busybox:local, imagePullPolicy: Never, command: [sh, -c, 'sleep 12; exit 3']}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: sleeper}}\nspec:\n  nodeName: {}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: busybox:local, imagePullPolicy: Never, command: [sleep, '3600']}}\n",
        agent.name, agent.name
    );
    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "{err}");
    let phase = |kc: &std::path::Path| {
        kubectl(
            kc,
            &["get", "pod", "exits", "-o", "jsonpath={.status.phase}"],
        )
        .1
    };
    eventually("exits Running", SETTLE, || {
        std::future::ready((phase(&kc) == "Running").then_some(()))
    })
    .await;

    // The master the agent reports to must be a follower, so that its
    // writes fail (rather than wait) once the others are gone: if it
    // leads, pause it until another leads.
    let session = loop {
        let on = eventually("the agent's session master", SETTLE, || {
            std::future::ready(agent.session_master())
        })
        .await;
        let i: usize = on[1..].parse::<usize>().expect("mN") - 1;
        if cluster.wait_leader(Duration::from_secs(20)).await != i {
            break i;
        }
        cluster.signal(i, true);
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.signal(i, false);
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let others: Vec<usize> = (0..3).filter(|j| *j != session).collect();
    let metrics = cluster.metrics_url(session);
    let failed_before = counter(&metrics, "skiff_agent_pod_reports_failed_total").await;
    for j in &others {
        cluster.signal(*j, true);
    }
    // The container exits meanwhile; its master cannot write that.
    let result = std::panic::AssertUnwindSafe(async {
        eventually("a pod report not written", SETTLE, || async {
            (counter(&metrics, "skiff_agent_pod_reports_failed_total").await > failed_before)
                .then_some(())
        })
        .await;
    });
    let outcome = futures::FutureExt::catch_unwind(result).await;
    for j in &others {
        cluster.signal(*j, false);
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    // The quorum is back: the agent sends the status again and it lands.
    let kc = cluster.kubeconfig(session);
    eventually("exits Failed with its exit code", SETTLE, || {
        let code = kubectl(
            &kc,
            &[
                "get",
                "pod",
                "exits",
                "-o",
                "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}",
            ],
        )
        .1;
        std::future::ready((phase(&kc) == "Failed" && code == "3").then_some(()))
    })
    .await;

    // A node under memory pressure (a threshold it always crosses): the
    // condition, the NoSchedule taint, and its pod evicted, Failed with the
    // kubelet's reason and message.
    let mut pressed = cluster.join("r2", &join).expect("node joins");
    pressed.run(&["--eviction-hard", "memory.available<1000Ti"]);
    eventually("r2 under memory pressure and tainted", SETTLE, || {
        let (_, out, _) = kubectl(&kc, &["get", "node", &pressed.name, "-o", "json"]);
        let n: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let under = n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "MemoryPressure" && c["status"] == "True");
        let tainted = n["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| {
                t["key"] == "node.kubernetes.io/memory-pressure" && t["effect"] == "NoSchedule"
            });
        std::future::ready((under && tainted).then_some(()))
    })
    .await;
    let squeezed = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: squeezed}}\nspec:\n  nodeName: {}\n  containers:\n  - {{name: c, image: busybox:local, imagePullPolicy: Never, command: [sleep, '3600']}}\n",
        pressed.name
    );
    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&squeezed));
    assert!(ok, "{err}");
    let status = eventually("squeezed evicted", SETTLE, || {
        let (_, out, _) = kubectl(&kc, &["get", "pod", "squeezed", "-o", "json"]);
        let p: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        std::future::ready(
            (p["status"]["phase"] == "Failed" && p["status"]["reason"] == "Evicted")
                .then(|| p["status"].clone()),
        )
    })
    .await;
    let message = status["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("The node was low on resource: memory."),
        "{message}"
    );
    pressed.kill();

    // A running pod deleted: its node confirms with a final report, which
    // is acknowledged and forgotten, so a new session (its master killed)
    // hears nothing of it.
    let (ok, _, err) = kubectl(&kc, &["delete", "pod", "sleeper", "--wait=true"]);
    assert!(ok, "{err}");
    let agent_metrics = format!("http://{}/metrics", agent.metrics);
    eventually("every report acknowledged", SETTLE, || async {
        let left = metric(&agent_metrics, "skiff_agent_reports_unacknowledged").await;
        (left == Some(0.0)).then_some(())
    })
    .await;
    // The other masters' counters so far (r2's session may have been on
    // either): only what the new session adds counts.
    let obsolete = [
        "skiff_agent_reports_refused_total",
        "skiff_agent_pod_reports_obsolete_total",
    ];
    let mut before = std::collections::HashMap::new();
    for j in (0..3).filter(|j| *j != session) {
        for name in obsolete {
            before.insert((j, name), counter(&cluster.metrics_url(j), name).await);
        }
    }
    println!("obsolete-report counters before the new session: {before:?}");
    let mut cluster = cluster;
    cluster.kill(session);
    let moved = eventually("the session on another master", SETTLE, || {
        std::future::ready(
            agent
                .session_master()
                .filter(|m| *m != format!("m{}", session + 1)),
        )
    })
    .await;
    let now_on: usize = moved[1..].parse::<usize>().expect("mN") - 1;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = cluster.metrics_url(now_on);
    let log = cluster.log(now_on);
    let told: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pod report dropped"))
        .collect();
    for name in obsolete {
        let added = counter(&metrics, name).await - before[&(now_on, name)];
        assert_eq!(
            added, 0.0,
            "{name}: the new session was told of a pod long gone: {told:?}"
        );
    }
    agent.kill();
}
