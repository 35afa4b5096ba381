//! The real kubectl 1.32 against a 3-master cluster over HTTPS with client
//! certificates.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{kubectl, kubectl_stdin, Cluster};

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n";

/// Every namespace holds the cluster CA (ConfigMap kube-root-ca.crt):
/// lists of what a test made leave it out.
const NOT_ROOT_CA: &str = "metadata.name!=kube-root-ca.crt";

fn configmap(ns: &str, name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\ndata:\n  k: \"{value}\"\n")
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:IMAGE
        env:
        - {name: MODE, value: serve}
"#;

fn service(name: &str, node_port: &str) -> String {
    let port = if node_port.is_empty() {
        String::new()
    } else {
        format!(", nodePort: {node_port}")
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  type: NodePort\n  selector: {{app: web}}\n  ports:\n  - {{port: 80{port}}}\n"
    )
}

const EVENT: &str = r#"
apiVersion: v1
kind: Event
metadata: {name: web.1, namespace: demo}
involvedObject: {apiVersion: apps/v1, kind: Deployment, name: web, namespace: demo, uid: UID}
reason: ScalingReplicaSet
message: Scaled up replica set web-1 to 1
type: Normal
source: {component: deployment-controller}
count: 1
"#;

/// The words of line `n` of kubectl's table output.
fn words(table: &str, n: usize) -> Vec<String> {
    let line = table.lines().nth(n).unwrap_or("");
    // Columns are separated by at least two spaces; cells may hold one.
    line.split("  ")
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn ok(r: (bool, String, String)) -> String {
    assert!(r.0, "kubectl failed:\nstdout: {}\nstderr: {}", r.1, r.2);
    r.1
}

/// Wait until `f` returns Some, or panic after `within`.
fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_works_against_any_master() {
    let mut cluster = Cluster::start(3, &[]).await;
    let kc = cluster.kubeconfig(0);

    // The built-in namespaces appear once a leader has taken the writes.
    eventually(Duration::from_secs(20), || {
        let (good, out, _) = kubectl(&kc, &["get", "ns", "-o", "name"]);
        (good && out.contains("namespace/default") && out.contains("namespace/kube-system"))
            .then_some(())
    });
    // Manifests are validated by the server (kubectl finds `fieldValidation`
    // in the OpenAPI documents and sends Strict).
    ok(kubectl_stdin(&kc, &["create", "-f", "-"], Some(NAMESPACE)));

    // apply creates, a changed manifest applied again patches (strategic merge).
    let v1 = DEPLOYMENT.replace("IMAGE", "1.36");
    ok(kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&v1)));
    let v2 = DEPLOYMENT.replace("IMAGE", "1.37");
    let out = ok(kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&v2)));
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&ok(kubectl(
        &kc,
        &["get", "deployment", "web", "-n", "demo", "-o", "json"],
    )))
    .unwrap();
    let c = &json["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "busybox:1.37");
    assert_eq!(c["env"][0]["value"], "serve");
    assert_eq!(json["metadata"]["generation"], 2);
    assert_eq!(json["spec"]["replicas"], 1, "defaulted");
    assert_eq!(json["spec"]["strategy"]["type"], "RollingUpdate");
    assert!(json["metadata"]["uid"].as_str().unwrap().len() == 36);
    let yaml = ok(kubectl(
        &kc,
        &["get", "deploy", "web", "-n", "demo", "-o", "yaml"],
    ));
    assert!(yaml.contains("image: busybox:1.37"), "{yaml}");

    // Server-side printing: the columns kubectl users know, and -o wide.
    // (The Deployment controller makes its pod; no node runs it.)
    let table = eventually(Duration::from_secs(20), || {
        let table = ok(kubectl(&kc, &["get", "deploy", "-n", "demo"]));
        words(&table, 1)
            .get(2)
            .is_some_and(|w| w == "1")
            .then_some(table)
    });
    assert_eq!(
        words(&table, 0),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    assert_eq!(&words(&table, 1)[..4], ["web", "0/1", "1", "0"], "{table}");
    let wide = ok(kubectl(&kc, &["get", "deploy", "-n", "demo", "-o", "wide"]));
    assert_eq!(
        &words(&wide, 0)[5..],
        ["CONTAINERS", "IMAGES", "SELECTOR"],
        "{wide}"
    );
    assert_eq!(
        &words(&wide, 1)[5..],
        ["web", "busybox:1.37", "app=web"],
        "{wide}"
    );

    // Unknown fields: refused under kubectl's default (strict) validation,
    // dropped with --validate=false; explain reads the same OpenAPI.
    let bogus = v2.replace("  selector:", "  bogus: 1\n  selector:");
    let (good, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&bogus));
    assert!(
        !good && err.contains(r#"unknown field "spec.bogus""#),
        "{err}"
    );
    ok(kubectl_stdin(
        &kc,
        &["apply", "--validate=false", "-f", "-"],
        Some(&bogus),
    ));
    let stored = ok(kubectl(
        &kc,
        &["get", "deploy", "web", "-n", "demo", "-o", "json"],
    ));
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert!(stored["spec"].get("bogus").is_none(), "{stored}");
    let explain = ok(kubectl(&kc, &["explain", "deployment.spec.replicas"]));
    assert!(
        explain.contains("FIELD: replicas") && explain.contains("desired pods"),
        "{explain}"
    );

    // Services get a cluster IP from the range and node ports, never twice.
    ok(kubectl_stdin(
        &kc,
        &["apply", "-f", "-"],
        Some(&service("web", "30080")),
    ));
    let svc = ok(kubectl(&kc, &["get", "svc", "web", "-n", "demo"]));
    assert_eq!(
        words(&svc, 0),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{svc}"
    );
    let row = words(&svc, 1);
    assert_eq!(
        (row[1].as_str(), row[4].as_str()),
        ("NodePort", "80:30080/TCP"),
        "{svc}"
    );
    let ip: std::net::Ipv4Addr = row[2].parse().unwrap();
    let [a, b, _, _] = ip.octets();
    assert!(a == 10 && (96..112).contains(&b), "in 10.96.0.0/12: {svc}");
    let (good, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&service("copy", "30080")));
    assert!(
        !good && err.contains("provided port is already allocated"),
        "{err}"
    );
    ok(kubectl_stdin(
        &kc,
        &["apply", "-f", "-"],
        Some(&service("other", "")),
    ));
    let ips = ok(kubectl(
        &kc,
        &[
            "get",
            "svc",
            "-n",
            "demo",
            "-o",
            "jsonpath={.items[*].spec.clusterIP}",
        ],
    ));
    let ips: Vec<&str> = ips.split_whitespace().collect();
    assert!(ips.len() == 2 && ips[0] != ips[1], "{ips:?}");
    ok(kubectl(&kc, &["delete", "svc", "web", "-n", "demo"]));
    ok(kubectl_stdin(
        &kc,
        &["apply", "-f", "-"],
        Some(&service("copy", "30080")),
    ));

    // describe shows the object's events.
    let uid = stored["metadata"]["uid"].as_str().unwrap();
    let event = EVENT.replace("UID", uid);
    ok(kubectl_stdin(&kc, &["create", "-f", "-"], Some(&event)));
    let described = ok(kubectl(&kc, &["describe", "deploy", "web", "-n", "demo"]));
    assert!(
        described.contains("Events:") && described.contains("Scaled up replica set web-1"),
        "{described}"
    );

    // label, annotate, scale.
    ok(kubectl(
        &kc,
        &["label", "deploy", "web", "-n", "demo", "tier=front"],
    ));
    ok(kubectl(
        &kc,
        &["annotate", "deploy", "web", "-n", "demo", "note=hello"],
    ));
    ok(kubectl(
        &kc,
        &["scale", "deploy", "web", "-n", "demo", "--replicas=3"],
    ));
    let out = ok(kubectl(
        &kc,
        &[
            "get",
            "deploy",
            "-n",
            "demo",
            "-l",
            "tier=front",
            "-o",
            "jsonpath={.items[0].spec.replicas} {.items[0].metadata.annotations.note}",
        ],
    ));
    assert_eq!(out, "3 hello");
    let out = ok(kubectl(
        &kc,
        &[
            "get",
            "deploy",
            "-n",
            "demo",
            "-l",
            "tier in (back)",
            "-o",
            "name",
        ],
    ));
    assert_eq!(out.trim(), "");

    // A Scale replaced at a stale resourceVersion is refused; without one
    // it applies to whatever is there.
    const SCALE: &str = "/apis/apps/v1/namespaces/demo/deployments/web/scale";
    let scale = ok(kubectl(&kc, &["get", "--raw", SCALE]));
    ok(kubectl(
        &kc,
        &["scale", "deploy", "web", "-n", "demo", "--replicas=4"],
    ));
    let mut scale: serde_json::Value = serde_json::from_str(&scale).expect("Scale");
    scale["spec"]["replicas"] = 2.into();
    let (good, _, err) = kubectl_stdin(
        &kc,
        &["replace", "--raw", SCALE, "-f", "-"],
        Some(&scale.to_string()),
    );
    assert!(
        !good && err.contains("the object has been modified"),
        "{err}"
    );
    scale["metadata"]["resourceVersion"] = "".into();
    ok(kubectl_stdin(
        &kc,
        &["replace", "--raw", SCALE, "-f", "-"],
        Some(&scale.to_string()),
    ));
    let now: serde_json::Value =
        serde_json::from_str(&ok(kubectl(&kc, &["get", "--raw", SCALE]))).expect("Scale");
    assert_eq!(now["spec"]["replicas"], 2, "{now}");

    // A stale update is refused with 409.
    ok(kubectl_stdin(
        &kc,
        &["create", "-f", "-"],
        Some(&configmap("demo", "settings", "v1")),
    ));
    let stale = ok(kubectl(
        &kc,
        &["get", "cm", "settings", "-n", "demo", "-o", "json"],
    ));
    ok(kubectl(
        &kc,
        &[
            "patch",
            "cm",
            "settings",
            "-n",
            "demo",
            "-p",
            r#"{"data":{"k":"v2"}}"#,
        ],
    ));
    let (good, _, err) = kubectl_stdin(&kc, &["replace", "-f", "-"], Some(&stale));
    assert!(
        !good && err.contains("the object has been modified"),
        "{err}"
    );

    // get -w sees a change made by another kubectl (through another master).
    let kc2 = cluster.kubeconfig(1);
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args([
            "get",
            "cm",
            "settings",
            "-n",
            "demo",
            "-w",
            "-o",
            "jsonpath={.data.k}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "v2");
    ok(kubectl(
        &kc2,
        &[
            "patch",
            "cm",
            "settings",
            "-n",
            "demo",
            "-p",
            r#"{"data":{"k":"v3"}}"#,
        ],
    ));
    assert_eq!(lines.next().unwrap().unwrap(), "v3");
    let _ = watch.kill();
    let _ = watch.wait();

    // A bad manifest gets the 422 message and stores nothing.
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_Valid\n  namespace: demo\n";
    let (good, _, err) = kubectl_stdin(&kc, &["create", "-f", "-"], Some(bad));
    assert!(
        !good && err.contains("is invalid") && err.contains("metadata.name"),
        "{err}"
    );
    let out = ok(kubectl(
        &kc,
        &[
            "get",
            "cm",
            "-n",
            "demo",
            "-o",
            "name",
            "--field-selector",
            NOT_ROOT_CA,
        ],
    ));
    assert_eq!(out.trim(), "configmap/settings");

    // Without a client certificate: 401.
    let out = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{}/api/v1/namespaces", cluster.api_url(0)),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");

    // Kill the master kubectl points at: another one has everything.
    cluster.kill(0);
    cluster.wait_leader(Duration::from_secs(10)).await;
    let kc3 = cluster.kubeconfig(2);
    let out = eventually(Duration::from_secs(10), || {
        let (good, out, _) = kubectl(&kc3, &["get", "deploy,cm", "-n", "demo", "-o", "name"]);
        good.then_some(out)
    });
    assert!(
        out.contains("deployment.apps/web") && out.contains("configmap/settings"),
        "{out}"
    );

    // Cascading delete of the namespace: Terminating, then gone with its objects.
    let out = ok(kubectl(
        &kc3,
        &["delete", "namespace", "demo", "--wait=false"],
    ));
    assert!(out.contains("deleted"), "{out}");
    let (good, _, err) = kubectl_stdin(
        &kc3,
        &["create", "-f", "-"],
        Some(&configmap("demo", "late", "x")),
    );
    assert!(
        !good && (err.contains("being terminated") || err.contains("not found")),
        "{err}"
    );
    eventually(Duration::from_secs(20), || {
        let (_, _, err) = kubectl(&kc3, &["get", "ns", "demo"]);
        err.contains("not found").then_some(())
    });
    let (_, keys, _) = cluster.etcdctl(&["get", "/registry/", "--prefix", "--keys-only"]);
    assert!(!keys.contains("/demo/"), "objects left behind: {keys}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_from_a_resource_version_and_answers_410_after_compaction() {
    let cluster = Cluster::start(3, &[]).await;
    let kc = cluster.kubeconfig(1);
    eventually(Duration::from_secs(20), || {
        kubectl(&kc, &["get", "ns", "default"]).0.then_some(())
    });
    ok(kubectl_stdin(
        &kc,
        &["create", "-f", "-"],
        Some(&configmap("default", "a", "1")),
    ));
    let rv = ok(kubectl(
        &kc,
        &[
            "get",
            "cm",
            "a",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
    ));
    ok(kubectl(
        &kc,
        &["patch", "cm", "a", "-p", r#"{"data":{"k":"2"}}"#],
    ));
    ok(kubectl(&kc, &["delete", "cm", "a"]));

    // From the resourceVersion of the create: the update, then the delete.
    let raw = format!(
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=2"
    );
    let out = ok(kubectl(&kc, &["get", "--raw", &raw]));
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["MODIFIED", "DELETED"], "{out}");
    assert_eq!(events[0]["object"]["data"]["k"], "2");
    let rvs: Vec<i64> = events
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        rvs[0] > rv.parse::<i64>().unwrap() && rvs[1] > rvs[0],
        "{rvs:?}"
    );

    // Compact past it: the same watch now gets 410 Gone.
    let (_, status, _) = cluster.etcdctl(&["endpoint", "status", "-w", "json"]);
    let revision = serde_json::from_str::<serde_json::Value>(&status).unwrap()[0]["Status"]
        ["header"]["revision"]
        .as_i64()
        .unwrap();
    let (good, _, err) = cluster.etcdctl(&["compaction", &revision.to_string()]);
    assert!(good, "{err}");
    let out = ok(kubectl(&kc, &["get", "--raw", &raw]));
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "ERROR", "{out}");
    assert_eq!(first["object"]["code"], 410);

    // Without a resourceVersion, a watch starts with every object as ADDED,
    // however many there are (the official Python client watches this way;
    // more than 64 once filled a buffer nobody read yet, and nothing came).
    ok(kubectl(&kc, &["create", "namespace", "many"]));
    let many: String = (0..80)
        .map(|i| format!("---\n{}", configmap("many", &format!("c{i}"), "v")))
        .collect();
    ok(kubectl_stdin(&kc, &["create", "-f", "-"], Some(&many)));
    let raw = "/api/v1/namespaces/many/configmaps?watch=true&timeoutSeconds=2";
    let out = ok(kubectl(&kc, &["get", "--raw", raw]));
    let added = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "ADDED")
        .filter(|e| e["object"]["metadata"]["name"] != "kube-root-ca.crt")
        .count();
    assert_eq!(added, 80, "{out}");
}

/// Client certificate and key from a kubeconfig, as PEM files for curl.
fn client_pem(kubeconfig: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use base64::Engine;
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let field = |name: &str| {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap();
        let b64 = line.split_once(':').unwrap().1.trim();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    };
    let cert = kubeconfig.with_extension("crt");
    let key = kubeconfig.with_extension("key");
    std::fs::write(&cert, field("client-certificate-data")).unwrap();
    std::fs::write(&key, field("client-key-data")).unwrap();
    (cert, key)
}

/// POST `body` with `content_type`; returns (HTTP code, Status JSON).
fn post(
    cluster: &Cluster,
    pem: &(std::path::PathBuf, std::path::PathBuf),
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    send(cluster, pem, "POST", path, content_type, body)
}

/// `method` with `body` as `content_type` to master 0; returns (HTTP code,
/// the answer's JSON).
fn send(
    cluster: &Cluster,
    pem: &(std::path::PathBuf, std::path::PathBuf),
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let file = cluster.dir.path().join("body");
    std::fs::write(&file, body).unwrap();
    let out = Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}", "-X", method, "-H"])
        .arg(format!("Content-Type: {content_type}"))
        .arg("--cert")
        .arg(&pem.0)
        .arg("--key")
        .arg(&pem.1)
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("{}{path}", cluster.api_url(0)))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (json, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_status_and_store_nothing() {
    let cluster = Cluster::start(3, &[]).await;
    let kc = cluster.kubeconfig(0);
    eventually(Duration::from_secs(20), || {
        kubectl(&kc, &["get", "ns", "default"]).0.then_some(())
    });
    let pem = client_pem(&kc);
    let cms = "/api/v1/namespaces/default/configmaps";
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            "application/json",
            b"{\"metadata\": ".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "malformed YAML",
            "application/yaml",
            b"metadata: [unclosed".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "wrong field type",
            "application/json",
            br#"{"metadata":{"name":"a"},"data":{"k":1}}"#.to_vec(),
            400,
            "BadRequest",
        ),
        (
            "invalid name",
            "application/json",
            br#"{"metadata":{"name":"UPPER"}}"#.to_vec(),
            422,
            "Invalid",
        ),
        (
            "no name",
            "application/json",
            br#"{"metadata":{}}"#.to_vec(),
            422,
            "Invalid",
        ),
        (
            "wrong content type",
            "text/plain",
            b"hello".to_vec(),
            415,
            "UnsupportedMediaType",
        ),
        (
            "over 3 MiB",
            "application/json",
            vec![b' '; (3 << 20) + 1],
            413,
            "RequestEntityTooLarge",
        ),
    ];
    for (what, ct, body, code, reason) in cases {
        let (got, status) = post(&cluster, &pem, cms, ct, &body);
        assert_eq!(got, code, "{what}: {status}");
        assert_eq!(status["kind"], "Status", "{what}");
        assert_eq!(status["reason"], reason, "{what}: {status}");
        assert_eq!(status["code"], code, "{what}");
    }
    // Missing required field: 422 with the field among the causes.
    let deploy = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"template":{}}}"#;
    let (got, status) = post(
        &cluster,
        &pem,
        "/apis/apps/v1/namespaces/default/deployments",
        "application/json",
        deploy,
    );
    assert_eq!(got, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["field"], "spec.selector",
        "{status}"
    );
    // Unknown resource: 404.
    let (got, status) = post(
        &cluster,
        &pem,
        "/api/v1/namespaces/default/widgets",
        "application/json",
        b"{}",
    );
    assert_eq!((got, status["reason"].as_str()), (404, Some("NotFound")));
    // Nothing was stored, and the server still serves.
    let out = ok(kubectl(
        &kc,
        &[
            "get",
            "cm,deploy",
            "-o",
            "name",
            "--field-selector",
            NOT_ROOT_CA,
        ],
    ));
    assert_eq!(out.trim(), "", "{out}");
    let (_, keys, _) = cluster.etcdctl(&[
        "get",
        "/registry/core/configmaps/default/",
        "--prefix",
        "--keys-only",
    ]);
    assert_eq!(
        keys.trim(),
        "/registry/core/configmaps/default/kube-root-ca.crt"
    );
}

/// Protobuf as client-go writes it: a length-delimited field.
fn pb_bytes(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = pb_varint(u64::from(number) << 3 | 2);
    out.extend(pb_varint(bytes.len() as u64));
    out.extend_from_slice(bytes);
    out
}

/// A varint field.
fn pb_int(number: u32, v: i64) -> Vec<u8> {
    let mut out = pb_varint(u64::from(number) << 3);
    out.extend(pb_varint(v as u64));
    out
}

fn pb_varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// A Kubernetes protobuf body: `k8s\0`, then a runtime.Unknown holding the
/// type and the message's own encoding.
fn pb_envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = [
        pb_bytes(1, api_version.as_bytes()),
        pb_bytes(2, kind.as_bytes()),
    ]
    .concat();
    [b"k8s\0".to_vec(), pb_bytes(1, &type_meta), pb_bytes(2, raw)].concat()
}

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// kubectl's typed commands send protobuf bodies; they work as they do
/// against Kubernetes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_commands_send_protobuf_and_work() {
    let cluster = Cluster::start(3, &[]).await;
    let kc = cluster.kubeconfig(2);
    eventually(Duration::from_secs(20), || {
        kubectl(&kc, &["get", "ns", "default"]).0.then_some(())
    });
    let run = |args: &[&str]| ok(kubectl(&kc, args));
    run(&["create", "namespace", "typed"]);
    let n = ["-n", "typed"];
    let with_ns = |args: &[&'static str]| [&n[..], args].concat();
    run(&with_ns(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
    ]));
    run(&with_ns(&[
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=p=x",
    ]));
    run(&with_ns(&["create", "serviceaccount", "robot"]));
    run(&with_ns(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=2",
        "--port=8080",
    ]));
    run(&with_ns(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
        "--type=NodePort",
    ]));
    run(&with_ns(&[
        "run",
        "solo",
        "--image=busybox",
        "--restart=Never",
        "--labels=app=solo",
        "--env=A=B",
        "--",
        "sleep",
        "1",
    ]));
    run(&with_ns(&[
        "create",
        "job",
        "once",
        "--image=busybox",
        "--",
        "echo",
        "hi",
    ]));
    run(&with_ns(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/5 * * * *",
        "--",
        "date",
    ]));

    let get = |what: &[&'static str]| -> serde_json::Value {
        serde_json::from_str(&run(&[&["get"], what, &n[..], &["-o", "json"]].concat())).unwrap()
    };
    assert_eq!(get(&["configmap", "cfg"])["data"]["a"], "1");
    assert_eq!(get(&["secret", "s"])["data"]["p"], "eA==");
    assert_eq!(
        get(&["serviceaccount", "robot"])["metadata"]["name"],
        "robot"
    );
    let d = get(&["deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (c["image"].as_str(), c["ports"][0]["containerPort"].as_i64()),
        (Some("busybox:1.36"), Some(8080))
    );
    let s = get(&["service", "web"]);
    assert_eq!(s["spec"]["type"], "NodePort");
    assert_eq!(s["spec"]["selector"]["app"], "web");
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 8080);
    assert!(
        s["spec"]["ports"][0]["nodePort"]
            .as_i64()
            .is_some_and(|p| (30000..=32767).contains(&p)),
        "{s}"
    );
    assert!(
        s["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.")),
        "{s}"
    );
    let p = get(&["pod", "solo"]);
    assert_eq!(p["spec"]["restartPolicy"], "Never");
    assert_eq!(
        p["spec"]["containers"][0]["env"][0],
        serde_json::json!({"name": "A", "value": "B"})
    );
    assert_eq!(
        p["spec"]["containers"][0]["args"],
        serde_json::json!(["sleep", "1"])
    );
    assert_eq!(p["metadata"]["labels"]["app"], "solo");
    let j = get(&["job", "once"]);
    assert_eq!(
        j["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["echo", "hi"])
    );
    assert_eq!(get(&["cronjob", "tick"])["spec"]["schedule"], "*/5 * * * *");

    // Deletes and evictions with protobuf bodies, as client-go's typed
    // clients (kubectl drain) send them. Pods bound to a node that never
    // confirms stay marked, showing the grace they were given.
    let pem = client_pem(&cluster.kubeconfig(0));
    for pod in ["doomed", "evicted"] {
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: typed}}\nspec:\n  nodeName: nowhere\n  containers: [{{name: c, image: busybox}}]\n"
        );
        ok(kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&manifest)));
    }
    let doomed = "/api/v1/namespaces/typed/pods/doomed";
    let grace = |seconds: i64| pb_envelope("v1", "DeleteOptions", &pb_int(1, seconds));
    // Garbled, or not a DeleteOptions: 400, and nothing happens.
    for (what, body) in [
        ("truncated", b"k8s\0\x0a\xff".to_vec()),
        ("no prefix", pb_int(1, 7)),
        (
            "a ConfigMap",
            pb_envelope("v1", "ConfigMap", &pb_bytes(1, &pb_bytes(1, b"doomed"))),
        ),
        (
            "an unknown field",
            pb_envelope("v1", "DeleteOptions", &pb_int(99, 1)),
        ),
    ] {
        let (code, status) = send(&cluster, &pem, "DELETE", doomed, PROTOBUF, &body);
        assert_eq!(
            (code, &status["reason"]),
            (400, &serde_json::json!("BadRequest")),
            "{what}: {status}"
        );
    }
    let p = get(&["pod", "doomed"]);
    assert!(p["metadata"]["deletionTimestamp"].is_null(), "{p}");
    let (code, status) = send(&cluster, &pem, "DELETE", doomed, PROTOBUF, &grace(7));
    assert_eq!(code, 200, "{status}");
    assert_eq!(
        get(&["pod", "doomed"])["metadata"]["deletionGracePeriodSeconds"],
        7
    );
    let (code, status) = send(&cluster, &pem, "DELETE", doomed, PROTOBUF, &grace(0));
    assert_eq!(code, 200, "{status}");
    let (gone, _, err) = kubectl(&kc, &["get", "pod", "doomed", "-n", "typed"]);
    assert!(!gone && err.contains("not found"), "{err}");
    // A deletecollection's body counts too: a dry run deletes nothing.
    let dry = pb_envelope("v1", "DeleteOptions", &pb_bytes(5, b"All"));
    let (code, status) = send(
        &cluster,
        &pem,
        "DELETE",
        "/api/v1/namespaces/typed/configmaps",
        PROTOBUF,
        &dry,
    );
    assert_eq!(code, 200, "{status}");
    assert!(
        status["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|c| c["metadata"]["name"] == "cfg")),
        "{status}"
    );
    assert_eq!(get(&["configmap", "cfg"])["data"]["a"], "1");

    // pods/eviction: listed for kubectl drain, refused when malformed or
    // misdirected, and deleting with its options when well formed.
    let (_, core, _) = kubectl(&kc, &["get", "--raw", "/api/v1"]);
    let core: serde_json::Value = serde_json::from_str(&core).unwrap();
    let listed = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/eviction")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (
            &listed["group"],
            &listed["version"],
            &listed["kind"],
            &listed["verbs"]
        ),
        (
            &serde_json::json!("policy"),
            &serde_json::json!("v1"),
            &serde_json::json!("Eviction"),
            &serde_json::json!(["create"])
        ),
        "{core}"
    );
    let evict = |pod: &str| format!("/api/v1/namespaces/typed/pods/{pod}/eviction");
    let eviction = |name: &str, grace: &[u8]| {
        let meta = [pb_bytes(1, name.as_bytes()), pb_bytes(3, b"typed")].concat();
        pb_envelope(
            "policy/v1",
            "Eviction",
            &[pb_bytes(1, &meta), pb_bytes(2, grace)].concat(),
        )
    };
    let json_eviction = |name: &str| {
        format!(r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{name}"}}}}"#)
            .into_bytes()
    };
    for (what, pod, ct, body, want) in [
        (
            "no such pod",
            "ghost",
            PROTOBUF,
            eviction("ghost", b""),
            404,
        ),
        (
            "another pod's name",
            "evicted",
            PROTOBUF,
            eviction("doomed", b""),
            400,
        ),
        (
            "malformed JSON",
            "evicted",
            "application/json",
            b"{\"metadata\":".to_vec(),
            400,
        ),
        (
            "a Pod, not an Eviction",
            "evicted",
            "application/json",
            br#"{"kind":"Pod","metadata":{"name":"evicted"}}"#.to_vec(),
            400,
        ),
        (
            "garbled protobuf",
            "evicted",
            PROTOBUF,
            b"k8s\0\x12\x09".to_vec(),
            400,
        ),
        (
            "no such pod (JSON)",
            "ghost",
            "application/json",
            json_eviction("ghost"),
            404,
        ),
    ] {
        let (code, status) = post(&cluster, &pem, &evict(pod), ct, &body);
        assert_eq!(code, want, "{what}: {status}");
        assert_eq!(status["kind"], "Status", "{what}: {status}");
    }
    let p = get(&["pod", "evicted"]);
    assert!(p["metadata"]["deletionTimestamp"].is_null(), "{p}");
    let (code, status) = post(
        &cluster,
        &pem,
        &evict("evicted"),
        PROTOBUF,
        &eviction("evicted", &pb_int(1, 5)),
    );
    assert_eq!(
        (code, &status["status"]),
        (201, &serde_json::json!("Success")),
        "{status}"
    );
    assert_eq!(
        get(&["pod", "evicted"])["metadata"]["deletionGracePeriodSeconds"],
        5
    );
}

/// A delete without preconditions is not optimistic: an object that keeps
/// changing under it (as a controller writes status) is still deleted, with
/// each propagation policy. (It once answered 409 when a write landed
/// between the delete's read and its write.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_succeed_while_the_object_keeps_changing() {
    let cluster = Cluster::start(3, &[]).await;
    let kc = cluster.kubeconfig(0);
    let kube = common::fake_nodes::Kube::new(&kc);
    for cascade in ["orphan", "foreground", "background"] {
        let name = format!("busy-{cascade}");
        let path = format!("/api/v1/namespaces/default/pods/{name}");
        let pod = serde_json::json!({"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        kube.post("/api/v1/namespaces/default/pods", &pod)
            .await
            .expect("create");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (kube, path, stop) = (kube.clone(), path.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        n += 1;
                        let patch = serde_json::json!({"metadata": {"annotations": {format!("w{w}"): n.to_string()}}});
                        if let Err((404, _)) = kube.merge_patch(&path, &patch).await {
                            break;
                        }
                    }
                    n
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let out = tokio::task::spawn_blocking({
            let kc = kc.clone();
            let arg = format!("--cascade={cascade}");
            move || kubectl(&kc, &["delete", "pod", &name, &arg, "--wait=false"])
        })
        .await
        .expect("kubectl");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut writes = 0;
        for w in writers {
            writes += w.await.expect("writer");
        }
        assert!(
            out.0,
            "delete --cascade={cascade} during {writes} writes: {}",
            out.2
        );
        common::eventually("the pod to go", Duration::from_secs(20), || async {
            matches!(kube.get(&path).await, Err((404, _))).then_some(())
        })
        .await;
    }
}
