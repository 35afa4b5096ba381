//! Node agents on the machine's real Docker engine, joined through the
//! real join flow, driven with the real kubectl: pods run as containers,
//! report status, restart, probe, take their ConfigMaps and Secrets, stop
//! gracefully; logs and exec reach them through any master; and the node
//! survives its agent's and its master's deaths.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::agents::{
    create_token, docker_containers, node_ready, one_at_a_time, require_images, SETTLE,
};
use common::{eventually, kubectl, kubectl_stdin, Cluster};
use serde_json::Value;

fn ok((good, out, err): (bool, String, String)) -> String {
    assert!(good, "kubectl failed: {err}\n{out}");
    out
}

fn pod(kc: &std::path::Path, name: &str) -> Value {
    let (_, out, _) = kubectl(kc, &["get", "pod", name, "-o", "json"]);
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

async fn until<F: FnMut() -> Option<T>, T>(what: &str, mut f: F) -> T {
    eventually(what, SETTLE, || std::future::ready(f())).await
}

fn container_status<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: httpd
        image: busybox:local
        imagePullPolicy: Never
        command: [httpd, -f, -p, "8080", -h, /var/www]
"#;

const CONFIG: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {colour: blue}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2}
data: {key: djE=}
"#;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: pair}
spec:
  restartPolicy: Never
  containers:
  - name: server
    image: busybox:local
    command: [httpd, -f, -p, "8081", -h, /var/www]
  - name: client
    image: busybox:local
    env:
    - {name: COLOUR, valueFrom: {configMapKeyRef: {name: settings, key: colour}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    command: [sh, -c, 'until wget -q -O /tmp/page http://127.0.0.1:8081/; do sleep 0.2; done; echo "$COLOUR $PASSWORD $(cat /tmp/page)" > /dev/termination-log']
---
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers:
  - {name: crash, image: busybox:local, command: [sh, -c, 'echo dying; exit 3']}
---
apiVersion: v1
kind: Pod
metadata: {name: unhealthy}
spec:
  containers:
  - name: app
    image: busybox:local
    command: [sh, -c, 'touch /tmp/alive; sleep 2; rm /tmp/alive; sleep 3600']
    livenessProbe:
      exec: {command: [test, -f, /tmp/alive]}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  volumes:
  - {name: creds, secret: {secretName: creds}}
  containers:
  - name: app
    image: busybox:local
    command: [sleep, "3600"]
    volumeMounts: [{name: creds, mountPath: /etc/creds}]
    readinessProbe:
      exec: {command: [grep, -q, v2, /etc/creds/key]}
      periodSeconds: 1
"#;

/// Join refusals, then one node running a Deployment, pods that talk over
/// localhost and read a ConfigMap and a Secret, a crash loop, a liveness
/// restart, readiness following a Secret volume, logs and exec through
/// another master, jobs' logs found by their selectors, and a graceful
/// delete with its preStop hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_join_run_pods_and_report() {
    let _serial = one_at_a_time().await;
    require_images();
    let cluster = Cluster::start(3, &[]).await;
    let kc = cluster.kubeconfig(0);

    // Refusals: nothing is registered for any of them.
    let good = create_token(&cluster, &[]);
    let mut wrong = create_token(&cluster, &[]);
    wrong.token = format!("{}.0000000000000000", &wrong.token[..6]);
    let err = cluster
        .join("bad", &wrong)
        .err()
        .expect("a wrong secret is refused");
    assert!(err.contains("secret part does not match"), "{err}");
    let mut unknown = create_token(&cluster, &[]);
    unknown.token = "zzzzzz.0000000000000000".into();
    let err = cluster
        .join("bad", &unknown)
        .err()
        .expect("an unknown token is refused");
    assert!(err.contains("does not exist"), "{err}");
    let expiring = create_token(&cluster, &["--ttl", "1s"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = cluster
        .join("bad", &expiring)
        .err()
        .expect("an expired token is refused");
    assert!(err.contains("expired"), "{err}");
    let deleted = create_token(&cluster, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["token", "delete", &deleted.token, "--kubeconfig"])
        .arg(&kc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = cluster
        .join("bad", &deleted)
        .err()
        .expect("a deleted token is refused");
    assert!(err.contains("does not exist"), "{err}");
    let mut pinned_wrong = create_token(&cluster, &[]);
    pinned_wrong.ca_hash = format!("sha256:{}", "0".repeat(64));
    let err = cluster
        .join("bad", &pinned_wrong)
        .err()
        .expect("a wrong CA hash is refused");
    assert!(err.contains("refusing to trust it"), "{err}");
    assert!(!ok(kubectl(&kc, &["get", "nodes", "-o", "name"])).contains("bad-"));

    let mut n1 = cluster
        .join("n1", &good)
        .expect("joining with a fresh token");
    n1.run(&[]);
    let node = n1.name.clone();
    until("the node Ready", || {
        (node_ready(&kc, &node) == "True").then_some(())
    })
    .await;
    ok(kubectl(
        &kc,
        &["get", "lease", "-n", "kube-node-lease", &node],
    ));
    // The node's kubelet endpoint is the agent's own HTTP port, which a
    // scraper's node discovery takes for the node's: its metrics are there.
    let port = ok(kubectl(
        &kc,
        &[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
        ],
    ));
    assert_eq!(Some(port.trim()), n1.metrics.rsplit(':').next());
    let scraped = reqwest::get(format!("http://{}/metrics", n1.metrics))
        .await
        .expect("the agent's metrics");
    assert!(scraped.status().is_success(), "{}", scraped.status());

    // A Deployment runs as Docker containers, labelled.
    ok(kubectl_stdin(&kc, &["apply", "-f", "-"], Some(DEPLOYMENT)));
    until("3 web pods Running", || {
        let out = kubectl(
            &kc,
            &[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[*].status.phase}",
            ],
        )
        .1;
        (out.split_whitespace().filter(|p| *p == "Running").count() == 3).then_some(())
    })
    .await;
    let web = docker_containers(&format!("skiff.io/node={node}"));
    let apps: Vec<_> = web
        .iter()
        .filter(|(_, l)| l["io.kubernetes.container.name"] == "httpd")
        .collect();
    let sandboxes: Vec<_> = web
        .iter()
        .filter(|(_, l)| l["io.kubernetes.container.name"] == "POD")
        .collect();
    assert_eq!((apps.len(), sandboxes.len()), (3, 3), "{web:?}");
    for (_, l) in &apps {
        assert_eq!(l["io.kubernetes.pod.namespace"], "default");
        assert!(l["io.kubernetes.pod.uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty()));
        assert!(l["skiff.io/spec-hash"]
            .as_str()
            .is_some_and(|h| h.len() == 16));
    }

    // Two containers of a pod over localhost, env from a ConfigMap and a Secret.
    ok(kubectl_stdin(&kc, &["apply", "-f", "-"], Some(CONFIG)));
    ok(kubectl_stdin(&kc, &["apply", "-f", "-"], Some(PODS)));
    let message = until("the client's termination message", || {
        let p = pod(&kc, "pair");
        container_status(&p, "client")["state"]["terminated"]["message"]
            .as_str()
            .map(str::to_string)
    })
    .await;
    assert_eq!(message.trim(), "blue hunter2 hello from busybox:local");

    // A crash loop: back-off, restarts counted.
    let crash = until("CrashLoopBackOff after 2 restarts", || {
        let p = pod(&kc, "crash");
        let c = container_status(&p, "crash");
        (c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            && c["restartCount"].as_i64() >= Some(2))
        .then(|| c.clone())
    })
    .await;
    assert_eq!(crash["lastState"]["terminated"]["exitCode"], 3, "{crash}");

    // A failing liveness probe restarts its container.
    until("a liveness restart", || {
        let p = pod(&kc, "unhealthy");
        (container_status(&p, "app")["restartCount"].as_i64() >= Some(1)).then_some(())
    })
    .await;

    // Readiness follows a file of a Secret volume, which follows the Secret.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready = |p: &Value| {
        p["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["status"] == "True")
    };
    assert_eq!(
        ready(&pod(&kc, "reader")),
        Some(false),
        "v1 in the volume: not ready"
    );
    ok(kubectl(
        &kc,
        &[
            "patch",
            "secret",
            "creds",
            "-p",
            r#"{"data":{"key":"djI="}}"#,
        ],
    ));
    until("reader Ready after the Secret changed", || {
        (ready(&pod(&kc, "reader")) == Some(true)).then_some(())
    })
    .await;

    // Logs and exec through a master the agent's session is not on.
    let on = until("the agent's session master", || n1.session_master()).await;
    let other = (0..3).find(|i| format!("m{}", i + 1) != on).unwrap();
    let kc_other = cluster.kubeconfig(other);
    let web_pod = ok(kubectl(
        &kc,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    ));
    let out = ok(kubectl(
        &kc_other,
        &[
            "exec",
            &web_pod,
            "--",
            "sh",
            "-c",
            "echo from $(hostname); exit 0",
        ],
    ));
    assert_eq!(out.trim(), format!("from {web_pod}"));
    // And through the master the session is on (which may hold the
    // session's connection rather than a link).
    let on_i: usize = on[1..].parse::<usize>().unwrap() - 1;
    let out = ok(kubectl(
        &cluster.kubeconfig(on_i),
        &["exec", &web_pod, "--", "echo", "via-the-session-master"],
    ));
    assert_eq!(out.trim(), "via-the-session-master");
    let (good_exec, _, err) = kubectl(&kc_other, &["exec", &web_pod, "--", "sh", "-c", "exit 7"]);
    assert!(!good_exec && err.contains("exit code 7"), "{err}");
    let out = ok(kubectl(&kc_other, &["logs", "crash", "--previous"]));
    assert_eq!(out.trim(), "dying");
    let mut follow = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc_other)
        .args(["logs", "-f", "crash", "--tail=1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut follow_out = follow.stdout.take().unwrap();
    let read = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let n = follow_out.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let first = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap()
        .unwrap();
    assert!(first.contains("dying"), "{first:?}");
    let _ = follow.kill();
    let _ = follow.wait();

    // kubectl port-forward through that master: two connections in turn
    // reach the pod's httpd; a port nothing listens on is an error.
    let local = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut forward = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc_other)
        .args([
            "port-forward",
            &web_pod,
            &format!("{local}:8080"),
            &format!("{}:8089", local + 1),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let fetch = |port: u16| -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    };
    for _ in 0..2 {
        let page = until("a page through port-forward", || {
            fetch(local).filter(|b| !b.is_empty())
        })
        .await;
        assert!(page.contains("hello from busybox:local"), "{page}");
    }
    assert_eq!(
        fetch(local + 1).unwrap_or_default(),
        "",
        "nothing listens on 8089"
    );
    // kubectl reports the error (and, 1.32, ends the forward); give it
    // time: on a loaded machine it took more than 10 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && forward.try_wait().unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = forward.kill();
    let out = forward.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("8089"), "kubectl said: {said}");

    // Jobs made by `kubectl create job` select their own pods, so each
    // one's logs are its own though other pods share the namespace.
    for word in ["one", "two"] {
        let echo = format!("echo said-{word}");
        ok(kubectl(
            &kc,
            &[
                "create",
                "job",
                &format!("say-{word}"),
                "--image=busybox:local",
                "--",
                "sh",
                "-c",
                &echo,
            ],
        ));
    }
    for word in ["one", "two"] {
        let name = format!("say-{word}");
        let job = until("the job complete", || {
            let out = kubectl(&kc, &["get", "job", &name, "-o", "json"]).1;
            let j: Value = serde_json::from_str(&out).ok()?;
            (j["status"]["succeeded"] == 1).then_some(j)
        })
        .await;
        let out = ok(kubectl(&kc, &["logs", &format!("job/{name}")]));
        assert_eq!(out.trim(), format!("said-{word}"));
        let uid = job["metadata"]["uid"].as_str().unwrap_or_default();
        assert_eq!(
            job["spec"]["selector"],
            serde_json::json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"],
            serde_json::json!({
                "batch.kubernetes.io/controller-uid": uid,
                "controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "job-name": name,
            })
        );
    }

    // A graceful delete: the preStop hook runs, SIGTERM is honoured, and
    // the pod is gone only once its containers are.
    let marker = cluster.dir.path().join("prestop");
    std::fs::create_dir_all(&marker).unwrap();
    let graceful = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: graceful}}
spec:
  terminationGracePeriodSeconds: 20
  volumes: [{{name: out, hostPath: {{path: {}}}}}]
  containers:
  - name: app
    image: busybox:local
    command: [sh, -c, 'trap "sleep 2; exit 0" TERM; while true; do sleep 0.2; done']
    volumeMounts: [{{name: out, mountPath: /out}}]
    lifecycle:
      preStop: {{exec: {{command: [sh, -c, 'echo bye > /out/said']}}}}
"#,
        marker.display()
    );
    ok(kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&graceful)));
    until("graceful running", || {
        (pod(&kc, "graceful")["status"]["phase"] == "Running").then_some(())
    })
    .await;
    let uid = pod(&kc, "graceful")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    ok(kubectl(
        &kc,
        &["delete", "pod", "graceful", "--timeout=60s"],
    ));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert_eq!(
        std::fs::read_to_string(marker.join("said")).unwrap().trim(),
        "bye"
    );
    // Seen once under a loaded machine: the pod gone while its containers
    // were still listed; allow the engine a moment, and say what was left.
    let mut left = Vec::new();
    for _ in 0..50 {
        left = docker_containers(&format!("io.kubernetes.pod.uid={uid}"));
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        left.is_empty(),
        "containers outlived their pod: {left:?}\n{}",
        common::strip_ansi(&n1.log())
            .lines()
            .filter(|l| l.contains("graceful"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Two nodes: one node cannot read another's Secret; an agent killed with
/// -9 comes back and adopts its containers; the agent moves when its master
/// is killed; kubectl drain evicts a node's pods to the other; a node
/// silent past its grace goes NotReady and loses its pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_survive_failures_and_nodes_see_only_their_own() {
    let _serial = one_at_a_time().await;
    require_images();
    let mut cluster = Cluster::start(
        3,
        &[
            "--node-monitor-grace-period-secs",
            "6",
            "--default-eviction-timeout-secs",
            "2",
            // Node certificates renewed (at two thirds of their life) while
            // the test runs.
            "--node-cert-validity",
            "30s",
        ],
    )
    .await;
    let kc = cluster.kubeconfig(0);
    let join = create_token(&cluster, &[]);
    let mut n1 = cluster.join("n1", &join).unwrap();
    let mut n2 = cluster.join("n2", &join).unwrap();
    let first_cert = std::fs::read_to_string(n1.dir.join("node.crt")).unwrap();
    // Leases renewed every second, well within the 6 s grace.
    n1.run(&["--node-lease-duration", "4s"]);
    n2.run(&["--node-lease-duration", "4s"]);
    let (a, b) = (n1.name.clone(), n2.name.clone());
    for n in [&a, &b] {
        until("both nodes Ready", || {
            (node_ready(&kc, n) == "True").then_some(())
        })
        .await;
    }

    // Node A's Secret: readable by A, not by B, over REST and over QUIC.
    let secret_pod = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: only-a}}\nstringData: {{k: v}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: on-a}}\nspec:\n  nodeName: {a}\n  containers:\n  - name: app\n    image: busybox:local\n    command: [sleep, \"3600\"]\n    env: [{{name: K, valueFrom: {{secretKeyRef: {{name: only-a, key: k}}}}}}]\n"
    );
    ok(kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&secret_pod)));
    until("on-a Running", || {
        (pod(&kc, "on-a")["status"]["phase"] == "Running").then_some(())
    })
    .await;
    let server = cluster.api_url(1);
    let kc_a = n1.kubeconfig(&server, cluster.dir.path());
    let kc_b = n2.kubeconfig(&server, cluster.dir.path());
    ok(kubectl(&kc_a, &["get", "secret", "only-a"]));
    let (read, _, err) = kubectl(&kc_b, &["get", "secret", "only-a"]);
    assert!(
        !read && err.contains("Forbidden"),
        "node B read node A's Secret: {err}"
    );
    let (listed, _, err) = kubectl(&kc_a, &["get", "secrets"]);
    assert!(
        !listed && err.contains("Forbidden"),
        "a node listed Secrets: {err}"
    );
    // No node reads a pod's logs, its own pods' included (a kubelet serves
    // those itself); nor changes a pod other than through its status.
    for kc in [&kc_a, &kc_b] {
        let (read, _, err) = kubectl(kc, &["logs", "on-a"]);
        assert!(
            !read && err.contains("cannot get resource \"pods/log\""),
            "a node read a pod's logs: {err}"
        );
    }
    let (labelled, _, err) = kubectl(&kc_a, &["label", "pod", "on-a", "x=y"]);
    assert!(
        !labelled && err.contains("Forbidden"),
        "a node changed its pod's labels: {err}"
    );
    // A node has tokens only bound to its own pods: not unbound, not for
    // another node's pod.
    let uid = pod(&kc, "on-a")["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let (minted, _, err) = kubectl(&kc_a, &["create", "token", "default", "--duration=87600h"]);
    assert!(
        !minted
            && err.contains(
                "may have a token of service account default/default only bound to a pod on it"
            ),
        "a node minted an unbound token: {err}"
    );
    let bound = [
        "create",
        "token",
        "default",
        "--bound-object-kind=Pod",
        "--bound-object-name=on-a",
    ];
    let mut with_uid: Vec<&str> = bound.to_vec();
    let uid_flag = format!("--bound-object-uid={uid}");
    with_uid.push(&uid_flag);
    let (minted, _, err) = kubectl(&kc_b, &with_uid);
    assert!(
        !minted && (err.contains("is forbidden") || err.contains("pod default/on-a")),
        "node B had a token for node A's pod: {err}"
    );
    ok(kubectl(&kc_a, &with_uid));
    let holds = |d: &Value, kind: &str, name: &str| {
        d["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["kind"] == kind && o["name"] == name)
    };
    let held_a = n1.desired().await;
    assert!(
        holds(&held_a, "Secret", "only-a") && holds(&held_a, "Pod", "on-a"),
        "{held_a}"
    );
    let held_b = n2.desired().await;
    assert!(
        !holds(&held_b, "Secret", "only-a") && !holds(&held_b, "Pod", "on-a"),
        "{held_b}"
    );

    // kill -9 the agent while its pod runs; restarted, it adopts the same
    // containers: nothing duplicated, nothing restarted.
    let before = docker_containers(&format!("skiff.io/node={a}"));
    n1.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    n1.run(&[]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = docker_containers(&format!("skiff.io/node={a}"));
    let ids = |v: &[(String, Value)]| {
        let mut ids: Vec<String> = v.iter().map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(&before),
        ids(&after),
        "containers changed across an agent restart"
    );
    assert_eq!(
        container_status(&pod(&kc, "on-a"), "app")["restartCount"],
        0
    );

    // kill -9 the master the agent's session is on: it moves and goes on.
    let on = until("the agent's session master", || n1.session_master()).await;
    let i: usize = on[1..].parse::<usize>().unwrap() - 1;
    cluster.kill(i);
    let kc = cluster.kubeconfig((i + 1) % 3);
    until("the session on another master", || {
        n1.session_master().filter(|m| *m != on)
    })
    .await;
    let lease_time = || {
        kubectl(
            &kc,
            &[
                "get",
                "lease",
                "-n",
                "kube-node-lease",
                &a,
                "-o",
                "jsonpath={.spec.renewTime}",
            ],
        )
        .1
    };
    let first = lease_time();
    until("the lease renewed after the move", || {
        (lease_time() != first).then_some(())
    })
    .await;
    let moved = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: after-move}}\nspec:\n  nodeName: {a}\n  containers: [{{name: app, image: busybox:local, command: [sleep, \"3600\"]}}]\n");
    ok(kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&moved)));
    // By now (over 20 s on) the certificate has been renewed in place,
    // and the moves above were made with it.
    until("the node certificate renewed", || {
        let now = std::fs::read_to_string(n1.dir.join("node.crt")).ok()?;
        (now != first_cert).then_some(())
    })
    .await;
    // The renewal's own connection came and went; every master still
    // reaches the node for logs (it had taken the node's place on the
    // master it reached, and left none when it closed).
    for m in (0..3).filter(|m| *m != i) {
        let (good, _, err) = kubectl(&cluster.kubeconfig(m), &["logs", "on-a"]);
        assert!(good, "logs through m{}: {err}", m + 1);
    }
    until("a pod created after the move Running", || {
        (pod(&kc, "after-move")["status"]["phase"] == "Running").then_some(())
    })
    .await;

    // kubectl drain B: cordoned, its Deployment's pods evicted (through
    // pods/eviction) and made again on A.
    ok(kubectl(&kc, &["cordon", &a]));
    ok(kubectl_stdin(&kc, &["apply", "-f", "-"], Some(DRAINED)));
    let placed = |kc: &std::path::Path| -> Vec<(String, String, String)> {
        let out = kubectl(kc, &["get", "pods", "-l", "app=drained", "-o", "json"]).1;
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let s = |v: &Value| v.as_str().unwrap_or("").to_string();
                (
                    s(&p["metadata"]["name"]),
                    s(&p["spec"]["nodeName"]),
                    s(&p["status"]["phase"]),
                )
            })
            .collect()
    };
    let on_b = until("2 drained pods Running on B", || {
        let pods = placed(&kc);
        (pods.len() == 2 && pods.iter().all(|(_, n, p)| *n == b && p == "Running")).then_some(pods)
    })
    .await;
    ok(kubectl(&kc, &["uncordon", &a]));
    let (drained, out, err) = kubectl(
        &kc,
        &[
            "drain",
            &b,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ],
    );
    assert!(drained, "kubectl drain failed:\n{out}\n{err}");
    let said = format!("{out}{err}");
    for (pod, _, _) in &on_b {
        assert!(
            said.contains(&format!("pod/{pod} evicted")),
            "not evicted: {pod}\n{said}"
        );
    }
    let unschedulable = kubectl(
        &kc,
        &["get", "node", &b, "-o", "jsonpath={.spec.unschedulable}"],
    )
    .1;
    assert_eq!(unschedulable, "true");
    until("the drained pods Running again on A", || {
        let pods = placed(&kc);
        (pods.len() == 2 && pods.iter().all(|(_, n, p)| *n == a && p == "Running")).then_some(())
    })
    .await;
    let metrics: String = cluster
        .masters
        .iter()
        .enumerate()
        .filter(|(_, m)| m.child.is_some())
        .map(|(i, _)| {
            let out = Command::new("curl")
                .args(["-sf", &cluster.metrics_url(i)])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect();
    assert!(
        metrics.contains("skiff_pod_evictions_total{result=\"evicted\"} 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("eviction"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ok(kubectl(&kc, &["uncordon", &b]));

    // Node B falls silent past its grace: NotReady, its pods evicted and
    // replaced on node A.
    let evictable = format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: mover}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: mover}}}}\n  template:\n    metadata: {{labels: {{app: mover}}}}\n    spec:\n      nodeSelector: {{kubernetes.io/hostname: {b}}}\n      containers: [{{name: app, image: busybox:local, command: [sleep, \"3600\"]}}]\n");
    ok(kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&evictable)));
    until("mover Running on B", || {
        let out = kubectl(
            &kc,
            &[
                "get",
                "pods",
                "-l",
                "app=mover",
                "-o",
                "jsonpath={.items[*].status.phase}",
            ],
        )
        .1;
        (out == "Running").then_some(())
    })
    .await;
    let victim = ok(kubectl(
        &kc,
        &[
            "get",
            "pods",
            "-l",
            "app=mover",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    ));
    ok(kubectl(
        &kc,
        &[
            "patch",
            "deployment",
            "mover",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/template/spec/nodeSelector"}]"#,
        ],
    ));
    n2.kill();
    until("node B NotReady", || {
        let out = node_ready(&kc, &b);
        (out == "Unknown" || out == "False").then_some(())
    })
    .await;
    until("the pod on B evicted", || {
        pod(&kc, &victim)["metadata"]["deletionTimestamp"]
            .is_string()
            .then_some(())
    })
    .await;
    until("a replacement Running on A", || {
        let out = kubectl(&kc, &["get", "pods", "-l", "app=mover", "-o", "json"]).1;
        let v: Value = serde_json::from_str(&out).ok()?;
        v["items"]
            .as_array()?
            .iter()
            .any(|p| p["spec"]["nodeName"] == a.as_str() && p["status"]["phase"] == "Running")
            .then_some(())
    })
    .await;
}

/// Pods that stop at once (sleep ignores SIGTERM): a short grace.
const DRAINED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: drained}
spec:
  replicas: 2
  selector: {matchLabels: {app: drained}}
  template:
    metadata: {labels: {app: drained}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - {name: app, image: busybox:local, command: [sleep, "3600"]}
"#;

const BURNER: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: burn}
spec:
  replicas: 1
  selector: {matchLabels: {app: burn}}
  template:
    metadata: {labels: {app: burn}}
    spec:
      containers:
      - name: burn
        image: busybox:local
        command: [sh, -c, 'while :; do :; done']
        resources:
          requests: {cpu: 100m}
          limits: {cpu: 200m, memory: 32Mi}
"#;

/// The CPU column of `kubectl top` lines, in millicores, by name.
fn top_cpu(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.to_string();
            let cpu = f.next()?.strip_suffix('m')?.parse().ok()?;
            Some((name, cpu))
        })
        .collect()
}

/// `kubectl top` reads what the node measured, and the autoscaler (made
/// with `kubectl autoscale`, autoscaling/v1) follows real CPU use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_and_the_autoscaler_see_real_cpu_use() {
    let _serial = one_at_a_time().await;
    require_images();
    let cluster = Cluster::start(3, &["--horizontal-pod-autoscaler-sync-period-secs", "2"]).await;
    let kc = cluster.kubeconfig(0);
    let join = create_token(&cluster, &[]);
    let mut n1 = cluster.join("n1", &join).unwrap();
    n1.run(&["--stats-interval", "2s"]);
    let node = n1.name.clone();
    ok(kubectl_stdin(&kc, &["apply", "-f", "-"], Some(BURNER)));

    // A busy loop capped at 200m shows real use up to that (less when the
    // machine is busy: its request, 100m, is all it is owed); the node
    // shows its use.
    let deadline = Instant::now() + SETTLE;
    let pods = loop {
        let (good, out, err) = kubectl(&kc, &["top", "pod", "--no-headers"]);
        let rows = top_cpu(&out);
        if good && rows.len() == 1 && (60..=260).contains(&rows[0].1) {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl top pod never showed the burner: {out}{err}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(pods.starts_with("burn-"), "{pods}");
    let (good, out, err) = kubectl(&kc, &["top", "node", "--no-headers"]);
    assert!(good, "{err}");
    let nodes = top_cpu(&out);
    assert!(
        nodes.iter().any(|(n, cpu)| *n == node && *cpu >= 60),
        "top node: {out}"
    );
    // One pod by name.
    let burner = pods.split_whitespace().next().unwrap().to_string();
    let one = ok(kubectl(&kc, &["top", "pod", &burner, "--no-headers"]));
    assert_eq!(top_cpu(&one).len(), 1, "{one}");
    assert!(one.starts_with(&burner), "{one}");
    // Only what exists: a pod that is not there is 404.
    let (good, _, err) = kubectl(&kc, &["top", "pod", "nothing-here"]);
    assert!(!good && err.contains("not found"), "{err}");

    // 200m of a 100m request against a 50% goal: scale to the maximum.
    ok(kubectl(
        &kc,
        &[
            "autoscale",
            "deployment",
            "burn",
            "--min=1",
            "--max=3",
            "--cpu-percent=50",
        ],
    ));
    let v1 = ok(kubectl(
        &kc,
        &[
            "get",
            "horizontalpodautoscalers.v1.autoscaling",
            "burn",
            "-o",
            "jsonpath={.apiVersion} {.spec.targetCPUUtilizationPercentage}",
        ],
    ));
    assert_eq!(v1, "autoscaling/v1 50");
    let replicas = || {
        kubectl(
            &kc,
            &[
                "get",
                "deployment",
                "burn",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
        )
        .1
    };
    until("a scale up to 3", || (replicas() == "3").then_some(())).await;
    let current = until("the v1 view's current utilization", || {
        let out = kubectl(
            &kc,
            &[
                "get",
                "horizontalpodautoscalers.v1.autoscaling",
                "burn",
                "-o",
                "jsonpath={.status.currentCPUUtilizationPercentage}",
            ],
        )
        .1;
        out.parse::<u64>().ok()
    })
    .await;
    assert!(current > 50, "utilization {current}%");

    // Idle pods (the v2 object gets a stabilization window of 0 alongside
    // what v1 wrote): back to the minimum.
    ok(kubectl(
        &kc,
        &[
            "patch",
            "horizontalpodautoscalers.v2.autoscaling",
            "burn",
            "--type=merge",
            "-p",
            r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":0}}}}"#,
        ],
    ));
    ok(kubectl(
        &kc,
        &[
            "patch",
            "deployment",
            "burn",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/template/spec/containers/0/command","value":["sleep","3600"]}]"#,
        ],
    ));
    until("a scale down to 1", || (replicas() == "1").then_some(())).await;
    let (_, out, _) = kubectl(&kc, &["describe", "hpa", "burn"]);
    assert!(out.contains("SuccessfulRescale"), "describe: {out}");
}
