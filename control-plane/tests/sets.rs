//! The DaemonSet and StatefulSet controllers on a real 3-master cluster,
//! with fake nodes registered through the API (tests/common/fake_nodes.rs)
//! and the real kubectl for every user action.

mod common;

use std::time::{Duration, Instant};

use common::fake_nodes::{FakeNodes, Kube};
use common::{eventually, kubectl, kubectl_stdin, Cluster};
use serde_json::Value;

async fn pods_of(kube: &Kube, app: &str) -> Vec<Value> {
    kube.items(&format!(
        "/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"
    ))
    .await
    .into_iter()
    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
    .collect()
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn node_of(p: &Value) -> &str {
    p["spec"]["nodeName"].as_str().unwrap_or("")
}

fn image_of(p: &Value) -> &str {
    p["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

/// A cluster with `nodes`, once the `default` namespace exists (every
/// master creates the built-in namespaces in the background after the
/// first leader election).
async fn cluster_with(
    master: usize,
    nodes: &[&str],
) -> (Cluster, std::path::PathBuf, Kube, FakeNodes) {
    let cluster = Cluster::start(3, &[]).await;
    let kc = cluster.kubeconfig(master);
    let kube = Kube::new(&kc);
    eventually("the default namespace", Duration::from_secs(30), || async {
        kube.get("/api/v1/namespaces/default").await.ok()
    })
    .await;
    let nodes = FakeNodes::start(&kube, nodes).await;
    (cluster, kc, kube, nodes)
}

/// The nodes the pods are bound to, sorted.
fn nodes_of(pods: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = pods.iter().map(|p| node_of(p).to_string()).collect();
    n.sort();
    n
}

// `updateStrategy` is spelled out: the API server does not default it yet,
// and `kubectl rollout status` refuses a set without a RollingUpdate type.
const DAEMONSET: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: edge, namespace: default}
spec:
  selector: {matchLabels: {app: edge}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
  template:
    metadata: {labels: {app: edge}}
    spec:
      nodeSelector: {role: edge}
      containers:
      - {name: c, image: "busybox:1", resources: {requests: {cpu: 100m}}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemonset_follows_node_labels_cordons_and_rolls_out() {
    let (_cluster, kc, kube, _nodes) = cluster_with(0, &["n1", "n2", "n3"]).await;

    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(DAEMONSET));
    assert!(ok, "{err}");
    // No node is an edge node yet: nothing to run, and the status says so.
    eventually(
        "the status to be observed",
        Duration::from_secs(20),
        || async {
            let ds = kube
                .get("/apis/apps/v1/namespaces/default/daemonsets/edge")
                .await
                .ok()?;
            (ds["status"]["observedGeneration"] == 1).then_some(())
        },
    )
    .await;
    let ds = kube
        .get("/apis/apps/v1/namespaces/default/daemonsets/edge")
        .await
        .expect("ds");
    assert_eq!(ds["status"]["desiredNumberScheduled"], 0, "{ds}");
    assert!(pods_of(&kube, "edge").await.is_empty());

    let (ok, _, err) = kubectl(&kc, &["label", "node", "n1", "role=edge"]);
    assert!(ok, "{err}");
    let pods = eventually("a ready pod on n1", Duration::from_secs(30), || async {
        let pods = pods_of(&kube, "edge").await;
        (pods.len() == 1 && node_of(&pods[0]) == "n1" && is_ready(&pods[0])).then_some(pods)
    })
    .await;
    let pinned = &pods[0]["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"]
        [0];
    assert_eq!(pinned["key"], "metadata.name", "{pinned}");
    assert_eq!(pinned["values"][0], "n1", "{pinned}");
    assert!(pods[0]["metadata"]["labels"]["controller-revision-hash"].is_string());

    let (ok, _, err) = kubectl(&kc, &["label", "node", "n2", "role=edge"]);
    assert!(ok, "{err}");
    eventually("pods on n1 and n2", Duration::from_secs(30), || async {
        let pods = pods_of(&kube, "edge").await;
        (nodes_of(&pods) == ["n1", "n2"] && pods.iter().all(is_ready)).then_some(())
    })
    .await;

    let (ok, _, err) = kubectl(&kc, &["label", "node", "n1", "role-"]);
    assert!(ok, "{err}");
    eventually("n1's pod to go", Duration::from_secs(30), || async {
        (nodes_of(&pods_of(&kube, "edge").await) == ["n2"]).then_some(())
    })
    .await;
    let (ok, out, err) = kubectl(&kc, &["rollout", "status", "ds/edge", "--timeout=60s"]);
    assert!(ok && out.contains("successfully rolled out"), "{out}{err}");
    let ds = kube
        .get("/apis/apps/v1/namespaces/default/daemonsets/edge")
        .await
        .expect("ds");
    let s = &ds["status"];
    assert_eq!(
        (
            &s["desiredNumberScheduled"],
            &s["currentNumberScheduled"],
            &s["numberReady"]
        ),
        (&1.into(), &1.into(), &1.into()),
        "{s}"
    );

    // A cordoned node keeps its daemon: a replacement is bound there anyway.
    let (ok, _, err) = kubectl(&kc, &["cordon", "n2"]);
    assert!(ok, "{err}");
    let old = pods_of(&kube, "edge").await[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let (ok, _, err) = kubectl(&kc, &["delete", "pod", &old]);
    assert!(ok, "{err}");
    eventually(
        "a new pod bound to the cordoned n2",
        Duration::from_secs(30),
        || async {
            let pods = pods_of(&kube, "edge").await;
            (pods.len() == 1
                && pods[0]["metadata"]["name"] != old.as_str()
                && node_of(&pods[0]) == "n2"
                && is_ready(&pods[0]))
            .then_some(())
        },
    )
    .await;
    let (ok, _, err) = kubectl(&kc, &["uncordon", "n2"]);
    assert!(ok, "{err}");

    // A new template replaces the pods with at most one node unavailable.
    for n in ["n1", "n3"] {
        let (ok, _, err) = kubectl(&kc, &["label", "node", n, "role=edge"]);
        assert!(ok, "{err}");
    }
    let (ok, out, err) = kubectl(&kc, &["rollout", "status", "ds/edge", "--timeout=60s"]);
    assert!(ok, "{out}{err}");
    assert_eq!(nodes_of(&pods_of(&kube, "edge").await), ["n1", "n2", "n3"]);
    let (ok, _, err) = kubectl(&kc, &["set", "image", "ds/edge", "c=busybox:2"]);
    assert!(ok, "{err}");
    let mut least_ready = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = pods_of(&kube, "edge").await;
        let ready_nodes: std::collections::HashSet<&str> =
            pods.iter().filter(|p| is_ready(p)).map(node_of).collect();
        least_ready = least_ready.min(ready_nodes.len());
        if pods.len() == 3
            && pods
                .iter()
                .all(|p| image_of(p) == "busybox:2" && is_ready(p))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not finish: {pods:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        least_ready >= 2,
        "maxUnavailable=1 broken: {least_ready} nodes ready"
    );
    let (ok, out, err) = kubectl(&kc, &["rollout", "status", "ds/edge", "--timeout=30s"]);
    assert!(ok && out.contains("successfully rolled out"), "{out}{err}");

    // Deleting the set takes its pods with it.
    let (ok, _, err) = kubectl(&kc, &["delete", "ds", "edge"]);
    assert!(ok, "{err}");
    eventually(
        "the pods to be collected",
        Duration::from_secs(30),
        || async { pods_of(&kube, "edge").await.is_empty().then_some(()) },
    )
    .await;
}

const STATEFULSET: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  serviceName: web
  selector: {matchLabels: {app: web}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 0}}
  template:
    metadata: {labels: {app: web, skiff.test/hold: "true"}}
    spec:
      containers:
      - {name: web, image: "busybox:1"}
"#;

async fn pod(kube: &Kube, name: &str) -> Option<Value> {
    let p = kube
        .get(&format!("/api/v1/namespaces/default/pods/{name}"))
        .await
        .ok()?;
    p["metadata"]["deletionTimestamp"].is_null().then_some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statefulset_starts_in_order_rolls_from_the_top_and_scales_down_in_order() {
    let (_cluster, kc, kube, _nodes) = cluster_with(1, &["n1", "n2"]).await;

    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(STATEFULSET));
    assert!(ok, "{err}");
    let web0 = eventually("web-0 bound", Duration::from_secs(30), || async {
        let p = pod(&kube, "web-0").await?;
        p["spec"]["nodeName"].is_string().then_some(p)
    })
    .await;
    assert_eq!(web0["spec"]["hostname"], "web-0");
    assert_eq!(web0["spec"]["subdomain"], "web");
    assert_eq!(
        web0["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "web-0"
    );
    assert!(!is_ready(&web0), "held pods stay unready");

    // OrderedReady: web-1 waits for web-0.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert!(
            pod(&kube, "web-1").await.is_none(),
            "web-1 created before web-0 was ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, _, err) = kubectl(&kc, &["label", "pod", "web-0", "skiff.test/hold-"]);
    assert!(ok, "{err}");
    let web1 = eventually("web-1", Duration::from_secs(30), || async {
        pod(&kube, "web-1").await
    })
    .await;
    let web0 = pod(&kube, "web-0").await.expect("web-0");
    assert!(is_ready(&web0), "web-1 came before web-0 was ready");
    assert_eq!(web1["spec"]["hostname"], "web-1");
    eventually("readyReplicas 1", Duration::from_secs(20), || async {
        let s = kube
            .get("/apis/apps/v1/namespaces/default/statefulsets/web")
            .await
            .ok()?;
        (s["status"]["readyReplicas"] == 1 && s["status"]["replicas"] == 2).then_some(())
    })
    .await;
    let (ok, _, err) = kubectl(&kc, &["label", "pod", "web-1", "skiff.test/hold-"]);
    assert!(ok, "{err}");
    let (ok, out, err) = kubectl(&kc, &["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(ok && out.contains("roll out complete"), "{out}{err}");

    // A new template (and no hold): web-1 is replaced first, then web-0,
    // and at least one of them is ready at every moment.
    let sts = kube
        .get("/apis/apps/v1/namespaces/default/statefulsets/web")
        .await
        .expect("sts");
    let old_revision = sts["status"]["updateRevision"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let patch = r#"[{"op": "remove", "path": "/spec/template/metadata/labels/skiff.test~1hold"},
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "busybox:2"}]"#;
    let (ok, _, err) = kubectl(&kc, &["patch", "sts", "web", "--type=json", "-p", patch]);
    assert!(ok, "{err}");
    let mut updated_order: Vec<String> = Vec::new();
    let mut least_ready = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = pods_of(&kube, "web").await;
        least_ready = least_ready.min(pods.iter().filter(|p| is_ready(p)).count());
        for p in &pods {
            let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
            if image_of(p) == "busybox:2" && !updated_order.contains(&name) {
                updated_order.push(name);
            }
        }
        if pods.len() == 2
            && pods
                .iter()
                .all(|p| image_of(p) == "busybox:2" && is_ready(p))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the update did not finish: {pods:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(updated_order, ["web-1", "web-0"]);
    assert!(least_ready >= 1, "both pods were down at once");
    let (ok, out, err) = kubectl(&kc, &["rollout", "status", "sts/web", "--timeout=30s"]);
    assert!(ok, "{out}{err}");
    let sts = eventually(
        "the update to be complete",
        Duration::from_secs(20),
        || async {
            let s = kube
                .get("/apis/apps/v1/namespaces/default/statefulsets/web")
                .await
                .ok()?;
            (s["status"]["currentRevision"] == s["status"]["updateRevision"]).then_some(s)
        },
    )
    .await;
    assert_ne!(sts["status"]["updateRevision"], old_revision.as_str());
    assert_eq!(sts["status"]["updatedReplicas"], 2, "{}", sts["status"]);

    // Scale up to 3, then down to 1: web-2 goes before web-1, web-0 stays.
    let (ok, _, err) = kubectl(&kc, &["scale", "sts", "web", "--replicas=3"]);
    assert!(ok, "{err}");
    eventually("3 ready pods", Duration::from_secs(30), || async {
        let pods = pods_of(&kube, "web").await;
        (pods.len() == 3 && pods.iter().all(is_ready)).then_some(())
    })
    .await;
    let (ok, _, err) = kubectl(&kc, &["scale", "sts", "web", "--replicas=1"]);
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut names: Vec<String> = pods_of(&kube, "web")
            .await
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        names.sort();
        let has = |n: &str| names.iter().any(|x| x == n);
        assert!(
            !has("web-2") || has("web-1"),
            "web-1 went before web-2: {names:?}"
        );
        assert!(has("web-0"), "web-0 went: {names:?}");
        if names == ["web-0"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scale down did not finish: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("status replicas 1", Duration::from_secs(20), || async {
        let s = kube
            .get("/apis/apps/v1/namespaces/default/statefulsets/web")
            .await
            .ok()?;
        (s["status"]["replicas"] == 1 && s["status"]["readyReplicas"] == 1).then_some(())
    })
    .await;
}
