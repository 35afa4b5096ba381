//! The leader's scheduler and controllers on a real 3-master cluster, with
//! fake nodes registered through the API (tests/common/fake_nodes.rs) and
//! the real kubectl.

mod common;

use std::time::{Duration, Instant};

use common::fake_nodes::{FakeNodes, Kube};
use common::{eventually, kubectl, kubectl_stdin, Cluster};
use serde_json::{json, Value};

/// Short node timeouts, so that a silent node is noticed within the test.
const FAST_NODES: &[&str] = &[
    "--node-monitor-grace-period-secs",
    "3",
    "--default-eviction-timeout-secs",
    "2",
];

/// A cluster whose API has created the default namespaces, and its kubeconfig.
async fn ready(cluster: &Cluster, i: usize) -> (std::path::PathBuf, Kube) {
    let kc = cluster.kubeconfig(i);
    let kube = Kube::new(&kc);
    eventually("the default namespace", Duration::from_secs(30), || async {
        kube.get("/api/v1/namespaces/default")
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    (kc, kube)
}

fn deployment(replicas: u32, image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: {image}
        resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}
"#
    )
}

async fn pods_of(kube: &Kube, app: &str) -> Vec<Value> {
    kube.items(&format!(
        "/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"
    ))
    .await
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn image_of(p: &Value) -> String {
    p["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Apply the `web` Deployment (busybox:1).
fn apply_deployment(kc: &std::path::Path, replicas: u32) {
    let (ok, _, err) = kubectl_stdin(
        kc,
        &["apply", "-f", "-"],
        Some(&deployment(replicas, "busybox:1")),
    );
    assert!(ok, "{err}");
}

/// Apply the `web` Deployment (busybox:1) and wait for its rollout.
fn apply_and_roll_out(kc: &std::path::Path, replicas: u32) {
    apply_deployment(kc, replicas);
    let (ok, out, err) = kubectl(
        kc,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    assert!(ok, "rollout status: {out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deployment_scales_rolls_out_within_max_unavailable_and_rolls_back() {
    let cluster = Cluster::start(3, &[]).await;
    let (kc, kube) = ready(&cluster, 0).await;
    let _nodes = FakeNodes::start(&kube, &["n1", "n2", "n3"]).await;

    apply_and_roll_out(&kc, 4);
    let pods = pods_of(&kube, "web").await;
    assert_eq!(pods.len(), 4, "{pods:?}");
    assert!(
        pods.iter().all(|p| p["spec"]["nodeName"].is_string()),
        "every pod is bound"
    );

    // Scale up and down through the scale subresource.
    let (ok, _, err) = kubectl(&kc, &["scale", "deployment/web", "--replicas=6"]);
    assert!(ok, "{err}");
    eventually("6 ready pods", Duration::from_secs(30), || async {
        let pods = pods_of(&kube, "web").await;
        (pods.len() == 6 && pods.iter().all(is_ready)).then_some(())
    })
    .await;

    // Roll out a new template: never fewer than 6 - 1 ready pods.
    let (ok, _, err) = kubectl(&kc, &["set", "image", "deployment/web", "web=busybox:2"]);
    assert!(ok, "{err}");
    let mut least_ready = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = pods_of(&kube, "web").await;
        let live: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        least_ready = least_ready.min(live.iter().filter(|p| is_ready(p)).count());
        let done = live.len() == 6
            && live
                .iter()
                .all(|p| image_of(p) == "busybox:2" && is_ready(p));
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not finish: {pods:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        least_ready >= 5,
        "maxUnavailable=1 broken: only {least_ready} ready"
    );
    let (ok, out, err) = kubectl(
        &kc,
        &["rollout", "status", "deployment/web", "--timeout=30s"],
    );
    assert!(ok && out.contains("successfully rolled out"), "{out}{err}");

    let (ok, out, _) = kubectl(&kc, &["rollout", "history", "deployment/web"]);
    assert!(
        ok && out.contains('1') && out.contains('2'),
        "history: {out}"
    );

    // Undo goes back to the first template, as revision 3.
    let (ok, _, err) = kubectl(&kc, &["rollout", "undo", "deployment/web"]);
    assert!(ok, "undo: {err}");
    eventually("the rollback", Duration::from_secs(60), || async {
        let pods = pods_of(&kube, "web").await;
        let live: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        (live.len() == 6
            && live
                .iter()
                .all(|p| image_of(p) == "busybox:1" && is_ready(p)))
        .then_some(())
    })
    .await;
    let d = kube
        .get("/apis/apps/v1/namespaces/default/deployments/web")
        .await
        .expect("deployment");
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let (ok, out, _) = kubectl(&kc, &["describe", "deployment", "web"]);
    assert!(ok && out.contains("ScalingReplicaSet"), "describe: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_deployment_deletes_its_replicasets_and_pods() {
    let cluster = Cluster::start(3, &[]).await;
    let (kc, kube) = ready(&cluster, 1).await;
    let _nodes = FakeNodes::start(&kube, &["n1", "n2"]).await;

    apply_deployment(&kc, 3);
    eventually("3 pods", Duration::from_secs(30), || async {
        (pods_of(&kube, "web").await.len() == 3).then_some(())
    })
    .await;

    // Orphan: the ReplicaSet stays, without its owner.
    let (ok, _, err) = kubectl(&kc, &["delete", "deployment", "web", "--cascade=orphan"]);
    assert!(ok, "{err}");
    let rs = eventually(
        "the orphaned ReplicaSet",
        Duration::from_secs(20),
        || async {
            let sets = kube
                .items("/apis/apps/v1/namespaces/default/replicasets")
                .await;
            let gone = kube
                .get("/apis/apps/v1/namespaces/default/deployments/web")
                .await
                .is_err();
            (gone
                && sets.len() == 1
                && sets[0]["metadata"]["ownerReferences"]
                    .as_array()
                    .is_none_or(|o| o.is_empty()))
            .then(|| {
                sets[0]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
        },
    )
    .await;
    assert_eq!(pods_of(&kube, "web").await.len(), 3, "orphaned pods stay");

    // Background (kubectl's default): the set goes, then its pods.
    let (ok, _, err) = kubectl(&kc, &["delete", "replicaset", &rs]);
    assert!(ok, "{err}");
    eventually(
        "the pods to be collected",
        Duration::from_secs(20),
        || async { pods_of(&kube, "web").await.is_empty().then_some(()) },
    )
    .await;

    // Foreground: the deployment waits for its set and pods.
    apply_deployment(&kc, 2);
    eventually("2 pods", Duration::from_secs(30), || async {
        (pods_of(&kube, "web").await.len() == 2).then_some(())
    })
    .await;
    let (ok, _, err) = kubectl(
        &kc,
        &["delete", "deployment", "web", "--cascade=foreground"],
    );
    assert!(ok, "{err}");
    eventually("everything gone", Duration::from_secs(30), || async {
        let sets = kube
            .items("/apis/apps/v1/namespaces/default/replicasets")
            .await;
        let d = kube
            .get("/apis/apps/v1/namespaces/default/deployments/web")
            .await;
        (sets.is_empty() && d.is_err() && pods_of(&kube, "web").await.is_empty()).then_some(())
    })
    .await;

    // A namespace takes its contents with it.
    let (ok, _, err) = kubectl(&kc, &["create", "namespace", "scratch"]);
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(
        &kc,
        &[
            "create",
            "configmap",
            "c",
            "-n",
            "scratch",
            "--from-literal=a=b",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(&kc, &["delete", "namespace", "scratch", "--wait=false"]);
    assert!(ok, "{err}");
    eventually("the namespace to go", Duration::from_secs(20), || async {
        let ns = kube.get("/api/v1/namespaces/scratch").await;
        let cms = kube.items("/api/v1/namespaces/scratch/configmaps").await;
        (ns.is_err() && cms.is_empty()).then_some(())
    })
    .await;
}

/// Create a core/v1 object of `kind` (at its `plural`) in `default`, owned
/// by `owner` (its kind, name and uid) if given; returns its uid.
async fn create_owned(
    kube: &Kube,
    plural: &str,
    kind: &str,
    name: &str,
    owner: Option<(&str, &str, &str, &str)>,
) -> String {
    let mut meta = json!({"name": name, "namespace": "default"});
    if let Some((api_version, kind, owner, uid)) = owner {
        meta["ownerReferences"] = json!([{
            "apiVersion": api_version, "kind": kind, "name": owner, "uid": uid,
            "blockOwnerDeletion": true,
        }]);
    }
    let body = json!({"apiVersion": "v1", "kind": kind, "metadata": meta});
    let made = kube
        .post(&format!("/api/v1/namespaces/default/{plural}"), &body)
        .await
        .unwrap_or_else(|e| panic!("create {plural}/{name}: {e:?}"));
    made["metadata"]["uid"].as_str().expect("uid").to_string()
}

/// Create ConfigMap `parent` with a dependent `kid` of `(plural, kind)`,
/// then delete the parent with kubectl's `--cascade`; it must be gone.
async fn delete_parent_of(kube: &Kube, kc: &std::path::Path, kid: (&str, &str), cascade: &str) {
    let uid = create_owned(kube, "configmaps", "ConfigMap", "parent", None).await;
    let owner = ("v1", "ConfigMap", "parent", uid.as_str());
    create_owned(kube, kid.0, kid.1, "kid", Some(owner)).await;
    let flag = format!("--cascade={cascade}");
    let (ok, _, err) = kubectl(
        kc,
        &["delete", "configmap", "parent", &flag, "--timeout=30s"],
    );
    assert!(ok, "{cascade} delete: {err}");
    assert!(!exists(kube, "configmaps", "parent").await);
}

async fn exists(kube: &Kube, plural: &str, name: &str) -> bool {
    kube.get(&format!("/api/v1/namespaces/default/{plural}/{name}"))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dependents_and_owners_of_any_kind_are_collected() {
    let cluster = Cluster::start(3, &[]).await;
    let (kc, kube) = ready(&cluster, 1).await;

    // A ConfigMap owned by a Deployment goes with it.
    apply_deployment(&kc, 0);
    let d = kube
        .get("/apis/apps/v1/namespaces/default/deployments/web")
        .await
        .expect("deployment");
    let d_uid = d["metadata"]["uid"].as_str().expect("uid");
    create_owned(
        &kube,
        "configmaps",
        "ConfigMap",
        "web-config",
        Some(("apps/v1", "Deployment", "web", d_uid)),
    )
    .await;
    let (ok, _, err) = kubectl(&kc, &["delete", "deployment", "web"]);
    assert!(ok, "{err}");
    eventually(
        "the ConfigMap to be collected",
        Duration::from_secs(20),
        || async { (!exists(&kube, "configmaps", "web-config").await).then_some(()) },
    )
    .await;

    // A Secret whose owner never existed is collected.
    create_owned(
        &kube,
        "secrets",
        "Secret",
        "stray",
        Some((
            "v1",
            "ConfigMap",
            "ghost",
            "00000000-0000-0000-0000-000000000000",
        )),
    )
    .await;
    eventually(
        "the stray Secret to be collected",
        Duration::from_secs(20),
        || async { (!exists(&kube, "secrets", "stray").await).then_some(()) },
    )
    .await;

    // Foreground, on a kind no controller reads: the owner waits for its
    // dependent, then both are gone.
    delete_parent_of(
        &kube,
        &kc,
        ("serviceaccounts", "ServiceAccount"),
        "foreground",
    )
    .await;
    assert!(!exists(&kube, "serviceaccounts", "kid").await);

    // Orphan: the owner goes, its dependent stays without it.
    delete_parent_of(&kube, &kc, ("secrets", "Secret"), "orphan").await;
    let kid = kube
        .get("/api/v1/namespaces/default/secrets/kid")
        .await
        .expect("the orphaned Secret stays");
    assert!(
        kid["metadata"].get("ownerReferences").is_none(),
        "released from its owner: {kid}"
    );
    // And, released, it is not collected later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(exists(&kube, "secrets", "kid").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduler_explains_what_does_not_fit_and_honours_constraints() {
    let cluster = Cluster::start(3, &[]).await;
    let (kc, kube) = ready(&cluster, 2).await;
    let nodes = FakeNodes::start(&kube, &["n1", "n2", "n3"]).await;
    let (ok, _, err) = kubectl(&kc, &["taint", "node", "n3", "dedicated=gpu:NoSchedule"]);
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(&kc, &["label", "node", "n2", "disk=ssd"]);
    assert!(ok, "{err}");

    let big = r#"
apiVersion: v1
kind: Pod
metadata: {name: big, namespace: default}
spec:
  containers:
  - {name: c, image: busybox, resources: {requests: {cpu: "8"}}}
"#;
    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(big));
    assert!(ok, "{err}");
    let message = eventually("PodScheduled=False", Duration::from_secs(20), || async {
        let p = kube.get("/api/v1/namespaces/default/pods/big").await.ok()?;
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            .and_then(|c| c["message"].as_str().map(str::to_string))
    })
    .await;
    assert_eq!(
        message,
        "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: gpu}."
    );
    let (_, out, _) = kubectl(&kc, &["describe", "pod", "big"]);
    assert!(out.contains("FailedScheduling"), "describe: {out}");

    // A node big enough arrives: the pod is scheduled there.
    nodes.add("huge", "16").await;
    let node = eventually("big to be bound", Duration::from_secs(40), || async {
        let p = kube.get("/api/v1/namespaces/default/pods/big").await.ok()?;
        p["spec"]["nodeName"].as_str().map(str::to_string)
    })
    .await;
    assert_eq!(node, "huge");

    // nodeSelector, and required anti-affinity by hostname.
    let spread = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: ssd, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: ssd}}
  template:
    metadata: {labels: {app: ssd}}
    spec:
      nodeSelector: {disk: ssd}
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: ssd}}
            topologyKey: kubernetes.io/hostname
      containers:
      - {name: c, image: busybox}
"#;
    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(spread));
    assert!(ok, "{err}");
    let pods = eventually(
        "one ssd pod bound, one pending",
        Duration::from_secs(30),
        || async {
            let pods = pods_of(&kube, "ssd").await;
            let bound = pods
                .iter()
                .filter(|p| p["spec"]["nodeName"].is_string())
                .count();
            let refused = pods.iter().any(|p| {
                p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter().any(|c| {
                        c["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("didn't match pod anti-affinity rules"))
                    })
                })
            });
            (pods.len() == 2 && bound == 1 && refused).then_some(pods)
        },
    )
    .await;
    let bound = pods
        .iter()
        .find(|p| p["spec"]["nodeName"].is_string())
        .unwrap();
    assert_eq!(bound["spec"]["nodeName"], "n2", "nodeSelector disk=ssd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_node_loses_its_pods_to_another_node() {
    let cluster = Cluster::start(3, FAST_NODES).await;
    let (kc, kube) = ready(&cluster, 0).await;
    let nodes = FakeNodes::start(&kube, &["n1", "n2"]).await;
    apply_and_roll_out(&kc, 4);
    let on_n1 = pods_of(&kube, "web")
        .await
        .iter()
        .filter(|p| p["spec"]["nodeName"] == "n1")
        .count();
    assert!(on_n1 > 0, "spreading put pods on both nodes");

    // Drained without evictions, kubectl deletes n2's pods with a protobuf
    // DeleteOptions (it was once refused with 400); they come back on n1.
    let (drained, out, err) = kubectl(
        &kc,
        &[
            "drain",
            "n2",
            "--disable-eviction",
            "--ignore-daemonsets",
            "--timeout=30s",
        ],
    );
    assert!(drained && out.contains("deleted"), "{out}\n{err}");
    eventually("every pod on n1", Duration::from_secs(30), || async {
        let pods = pods_of(&kube, "web").await;
        (pods.len() == 4
            && pods
                .iter()
                .all(|p| p["spec"]["nodeName"] == "n1" && is_ready(p)))
        .then_some(())
    })
    .await;
    let (uncordoned, _, err) = kubectl(&kc, &["uncordon", "n2"]);
    assert!(uncordoned, "{err}");

    nodes.stop("n1");
    let node = eventually(
        "n1 to go Ready=Unknown",
        Duration::from_secs(20),
        || async {
            let n = kube.get("/api/v1/nodes/n1").await.ok()?;
            let unknown = n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "Unknown");
            let tainted = n["spec"]["taints"].as_array().is_some_and(|t| {
                t.iter().any(|t| {
                    t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"
                })
            });
            (unknown && tainted).then_some(n)
        },
    )
    .await;
    assert!(node["spec"]["taints"].is_array());
    // The evicted pods stay Terminating while their node cannot confirm
    // that their containers stopped (as in Kubernetes); their replacements
    // run on n2.
    eventually("every pod on n2", Duration::from_secs(40), || async {
        let pods: Vec<_> = pods_of(&kube, "web")
            .await
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        (pods.len() == 4
            && pods
                .iter()
                .all(|p| p["spec"]["nodeName"] == "n2" && is_ready(p)))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_completes_after_the_leader_is_killed() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let other = (leader + 1) % 3;
    let (kc, kube) = ready(&cluster, other).await;
    let _nodes = FakeNodes::start(&kube, &["n1", "n2", "n3"]).await;
    apply_and_roll_out(&kc, 6);
    let (ok, _, err) = kubectl(&kc, &["set", "image", "deployment/web", "web=busybox:2"]);
    assert!(ok, "{err}");
    // Mid-rollout: some pods new, not all.
    eventually("the rollout to start", Duration::from_secs(30), || async {
        let pods = pods_of(&kube, "web").await;
        pods.iter()
            .any(|p| image_of(p) == "busybox:2")
            .then_some(())
    })
    .await;
    cluster.kill(leader);
    let (ok, out, err) = kubectl(
        &kc,
        &["rollout", "status", "deployment/web", "--timeout=90s"],
    );
    assert!(ok, "rollout under the new leader: {out}{err}");
    let pods = pods_of(&kube, "web").await;
    let live: Vec<&Value> = pods
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    assert_eq!(live.len(), 6, "{pods:#?}");
    assert!(live.iter().all(|p| image_of(p) == "busybox:2"));
}
