//! Prometheus and vmagent scrape a cluster for real. Debian's Prometheus
//! (2.42, without kubernetes_sd) finds every master, every node agent and
//! every annotated pod through the masters' HTTP service discovery
//! (`/skiff/v1/http-sd`), and scrapes them all; vmagent finds nodes, pods,
//! endpoints and endpoint slices through Kubernetes service discovery
//! against Skiff's API and scrapes them all. Both run deploy/prometheus's
//! configurations (addresses and intervals changed for the test), and the
//! alerting rules are checked and unit-tested with promtool.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::agents::{create_token, node_ready, one_at_a_time, require_images, Agent};
use common::{eventually, kubectl, kubectl_stdin, Cluster};
use serde_json::Value;

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/prometheus")
        .join(file)
}

/// Run `program args` and return (succeeded, stdout + stderr).
fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A cluster CA in `dir/pki` (`control-plane init`) with Prometheus'
/// client certificate beside it (deploy/prometheus/credentials).
fn pki_with_credentials(pki: &Path) {
    if !pki.join("ca.crt").exists() {
        let (ok, out) = run(
            env!("CARGO_BIN_EXE_control-plane"),
            &["init", "certs", "--pki-dir", &pki.display().to_string()],
        );
        assert!(ok, "control-plane init: {out}");
    }
    let out = Command::new(deploy("credentials"))
        .arg(pki)
        .env(
            "SKIFF_CONTROL_PLANE_BIN",
            env!("CARGO_BIN_EXE_control-plane"),
        )
        .output()
        .expect("deploy/prometheus/credentials");
    assert!(
        out.status.success(),
        "credentials: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["prometheus.crt", "prometheus.key"] {
        assert!(pki.join(f).exists(), "{f} written");
    }
}

/// deploy/prometheus's `file`, pointed at `masters` (API addresses, in
/// place of the local cluster's 127.0.0.11-13) and the PKI in `pki`, with
/// short intervals; written into `dir`.
fn render(file: &str, masters: &[String], pki: &Path, dir: &Path) -> PathBuf {
    let mut text = std::fs::read_to_string(deploy(file)).expect("config");
    for (i, ip) in masters.iter().enumerate() {
        text = text.replace(&format!("127.0.0.1{}:6443", i + 1), &format!("{ip}:6443"));
    }
    text = text.replace("../../.skiff/dev/pki/", &format!("{}/", pki.display()));
    let mut yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    yaml["global"]["scrape_interval"] = "2s".into();
    if yaml["global"].get("evaluation_interval").is_some() {
        yaml["global"]["evaluation_interval"] = "2s".into();
    }
    if let Some(rules) = yaml.get_mut("rule_files").and_then(|r| r.as_sequence_mut()) {
        for r in rules {
            let name = r.as_str().expect("rule file").to_string();
            *r = deploy(&name).display().to_string().into();
        }
    }
    // vmagent has no refresh_interval (its -promscrape.httpSDCheckInterval).
    let prometheus = file == "prometheus.yml";
    for job in yaml["scrape_configs"]
        .as_sequence_mut()
        .expect("scrape_configs")
        .iter_mut()
        .filter(|_| prometheus)
    {
        for sd in job
            .get_mut("http_sd_configs")
            .and_then(|s| s.as_sequence_mut())
            .into_iter()
            .flatten()
        {
            sd["refresh_interval"] = "2s".into();
        }
    }
    let path = dir.join(file);
    std::fs::write(&path, serde_yaml::to_string(&yaml).expect("YAML")).expect("writing config");
    path
}

/// A scraper process, killed when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
    name: &'static str,
}

impl Daemon {
    fn start(name: &'static str, dir: &Path, program: &str, args: &[String]) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        Daemon { child, log, name }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {} log (tail) ---\n{}",
            self.name,
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get_json(url: &str) -> Option<Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

/// Active targets from a Prometheus-style `/api/v1/targets`: (job, health,
/// labels, last error).
async fn targets(base: &str) -> Vec<(String, String, Value, String)> {
    let Some(v) = get_json(&format!("{base}/api/v1/targets?state=active")).await else {
        return Vec::new();
    };
    v["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["labels"]["job"].as_str().unwrap_or("").to_string(),
                t["health"].as_str().unwrap_or("").to_string(),
                t["labels"].clone(),
                t["lastError"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Wait until `base` has exactly `want` targets up per job, and none down.
async fn all_up(base: &str, want: &[(&str, usize)], scraper: &Daemon) -> Vec<(String, Value)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let ts = targets(base).await;
        let counts_ok = want
            .iter()
            .all(|(job, n)| ts.iter().filter(|t| t.0 == *job && t.1 == "up").count() == *n);
        let none_down = ts.iter().all(|t| t.1 == "up");
        let only_these = ts.iter().all(|t| want.iter().any(|(j, _)| *j == t.0));
        if counts_ok && none_down && only_these {
            return ts
                .into_iter()
                .map(|(job, _, labels, _)| (job, labels))
                .collect();
        }
        if std::time::Instant::now() > deadline {
            let seen: Vec<String> = ts
                .iter()
                .map(|(job, health, labels, err)| {
                    format!("{job} {} {health} {err}", labels["instance"])
                })
                .collect();
            panic!(
                "{}: not every target up; want {want:?}, have:\n{}\n{}",
                scraper.name,
                seen.join("\n"),
                scraper.log()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `/api/v1/query` on Prometheus: the result vector.
async fn query(prometheus: &str, q: &str) -> Result<Vec<Value>, String> {
    let v: Value = reqwest::Client::new()
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(format!("{q}: {v}"));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// curl the service discovery with a client certificate: (HTTP code, body).
fn discovery(api: &str, ca: &Path, cert: Option<(&Path, &Path)>, query: &str) -> (u16, String) {
    let mut args = vec![
        "-s".to_string(),
        "-w".into(),
        "\n%{http_code}".into(),
        "--cacert".into(),
        ca.display().to_string(),
    ];
    if let Some((c, k)) = cert {
        args.extend(["--cert".into(), c.display().to_string()]);
        args.extend(["--key".into(), k.display().to_string()]);
    }
    args.push(format!("{api}/skiff/v1/http-sd{query}"));
    let out = Command::new("curl").args(&args).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn promtool_checks_the_configuration_and_tests_the_rules() {
    let (ok, out) = run(
        "promtool",
        &[
            "check",
            "rules",
            &deploy("alerts.yml").display().to_string(),
        ],
    );
    assert!(ok && out.contains("SUCCESS"), "promtool check rules: {out}");
    let (ok, out) = run(
        "promtool",
        &[
            "test",
            "rules",
            &deploy("alerts_test.yml").display().to_string(),
        ],
    );
    assert!(ok && out.contains("SUCCESS"), "promtool test rules: {out}");
    let (ok, out) = run(
        "promtool",
        &[
            "check",
            "config",
            &deploy("prometheus.yml").display().to_string(),
        ],
    );
    assert!(ok, "promtool check config (as shipped): {out}");

    // As the test runs them, with the files they name present.
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    pki_with_credentials(&pki);
    let masters = ["127.0.0.1".to_string()];
    let prom = render("prometheus.yml", &masters, &pki, dir.path());
    let (ok, out) = run(
        "promtool",
        &["check", "config", &prom.display().to_string()],
    );
    assert!(ok, "promtool check config (rendered): {out}");
    let vm = render("vmagent.yml", &masters, &pki, dir.path());
    let (ok, out) = run(
        "vmagent",
        &[
            &format!("-promscrape.config={}", vm.display()),
            "-promscrape.config.dryRun",
            "-promscrape.config.strictParse",
            "-loggerLevel=ERROR",
        ],
    );
    assert!(ok, "vmagent dry run: {out}");

    // The checks can fail: a rule that does not parse is refused.
    let broken = dir.path().join("broken.yml");
    let text = std::fs::read_to_string(deploy("alerts.yml")).expect("alerts.yml");
    std::fs::write(
        &broken,
        text.replace(
            "expr: up{job=\"skiff-master\"} == 0",
            "expr: up{job=\"skiff-master\" == 0",
        ),
    )
    .expect("write");
    let (ok, out) = run(
        "promtool",
        &["check", "rules", &broken.display().to_string()],
    );
    assert!(!ok, "a broken rule passed promtool: {out}");

    // The dashboard is Grafana JSON whose every panel queries something.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana-dashboard.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    assert_eq!(dash["uid"], "skiff-cluster");
    assert!(dashboard_queries(&dash).len() >= 20);
}

/// Every query of every panel in a Grafana dashboard.
fn dashboard_queries(dash: &Value) -> Vec<String> {
    dash["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect()
}

/// Two replicas serving a fixed exposition at :9102/metrics, asking to be
/// scraped, and a Service over them that asks the same.
const EXPORTER: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: exporter}
spec:
  replicas: 2
  selector: {matchLabels: {app: exporter}}
  template:
    metadata:
      labels: {app: exporter}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "9102"
        prometheus.io/path: /metrics
    spec:
      containers:
      - name: httpd
        image: busybox:local
        imagePullPolicy: Never
        ports: [{containerPort: 9102, name: metrics}]
        command:
        - sh
        - -c
        - |
          mkdir -p /w
          printf '# HELP skiff_test_exporter_up Always 1.\n# TYPE skiff_test_exporter_up gauge\nskiff_test_exporter_up 1\n' > /w/metrics
          exec httpd -f -p 9102 -h /w
---
apiVersion: v1
kind: Service
metadata:
  name: exporter
  annotations:
    prometheus.io/scrape: "true"
    prometheus.io/port: "9102"
spec:
  selector: {app: exporter}
  ports: [{name: metrics, port: 9102, targetPort: 9102}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_and_vmagent_scrape_every_master_node_and_pod() {
    let _one = one_at_a_time().await;
    require_images();
    let mut c = Cluster::start(3, &[]).await;
    let kc = c.kubeconfig(0);
    let join = create_token(&c, &[]);
    let mut agents: Vec<Agent> = ["a", "b"]
        .iter()
        .map(|s| c.join(s, &join).expect("join"))
        .collect();
    for a in &mut agents {
        // The node's address is where its metrics are, as on a real host.
        a.node_ip = a.metrics.rsplit_once(':').expect("host:port").0.to_string();
        a.run(&[]);
    }
    for a in &agents {
        eventually(
            &format!("node {} Ready", a.name),
            Duration::from_secs(60),
            || async { (node_ready(&kc, &a.name) == "True").then_some(()) },
        )
        .await;
    }
    let (ok, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(EXPORTER));
    assert!(ok, "kubectl apply: {err}");
    let pods: Vec<Value> = eventually(
        "both exporter pods running with an address",
        Duration::from_secs(90),
        || async {
            let (_, out, _) = kubectl(&kc, &["get", "pods", "-l", "app=exporter", "-o", "json"]);
            let list: Value = serde_json::from_str(&out).ok()?;
            let items = list["items"].as_array()?.clone();
            let running = items.iter().all(|p| {
                p["status"]["phase"] == "Running"
                    && p["status"]["podIP"]
                        .as_str()
                        .is_some_and(|ip| !ip.is_empty())
            });
            (items.len() == 2 && running).then_some(items)
        },
    )
    .await;

    // The document itself: authenticated, nodes refused, roles checked.
    let pki = c.dir.path().join("pki");
    pki_with_credentials(&pki);
    let ca = pki.join("ca.crt");
    let client = (pki.join("prometheus.crt"), pki.join("prometheus.key"));
    let client = Some((client.0.as_path(), client.1.as_path()));
    let api = c.api_url(1);
    let (code, body) = discovery(&api, &ca, client, "");
    assert_eq!(code, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("a JSON document");
    let groups = doc.as_array().expect("a list of target groups");
    let of_role = |role: &str| -> Vec<&Value> {
        groups
            .iter()
            .filter(|g| g["labels"]["__meta_skiff_role"] == role)
            .collect()
    };
    let master_targets: Vec<&str> = of_role("master")
        .iter()
        .filter_map(|g| g["targets"][0].as_str())
        .collect();
    for i in 0..3 {
        let want = format!("{}:2381", c.masters[i].ip);
        assert!(master_targets.contains(&want.as_str()), "{want} in {body}");
    }
    assert_eq!(master_targets.len(), 3, "{body}");
    for a in &agents {
        let g = of_role("node")
            .into_iter()
            .find(|g| g["labels"]["__meta_kubernetes_node_name"] == a.name.as_str())
            .unwrap_or_else(|| panic!("node {} in {body}", a.name));
        assert_eq!(g["targets"][0], a.metrics.as_str());
    }
    for p in &pods {
        let name = p["metadata"]["name"].as_str().expect("name");
        let g = of_role("pod")
            .into_iter()
            .find(|g| g["labels"]["__meta_kubernetes_pod_name"] == name)
            .unwrap_or_else(|| panic!("pod {name} in {body}"));
        let ip = p["status"]["podIP"].as_str().expect("podIP");
        assert_eq!(g["targets"][0], format!("{ip}:9102").as_str());
        assert_eq!(g["labels"]["__meta_kubernetes_namespace"], "default");
        assert_eq!(
            g["labels"]["__meta_kubernetes_pod_node_name"],
            p["spec"]["nodeName"]
        );
        assert_eq!(g["labels"]["__metrics_path__"], "/metrics");
    }
    assert_eq!(of_role("pod").len(), 2, "only the annotated pods: {body}");
    let (code, body) = discovery(&api, &ca, client, "?role=node");
    assert_eq!(code, 200);
    let only_nodes: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(only_nodes.as_array().map(Vec::len), Some(2), "{body}");
    let (code, body) = discovery(&api, &ca, client, "?role=everything");
    assert_eq!(code, 400, "{body}");
    let (code, _) = discovery(&api, &ca, None, "");
    assert_eq!(code, 401, "no certificate");
    let node_cert = (
        agents[0].dir.join("node.crt"),
        agents[0].dir.join("node.key"),
    );
    let (code, body) = discovery(
        &api,
        &ca,
        Some((node_cert.0.as_path(), node_cert.1.as_path())),
        "",
    );
    assert_eq!(code, 403, "a node may not read it: {body}");

    // Prometheus, through the HTTP service discovery.
    let work = tempfile::tempdir().expect("tempdir");
    let ips: Vec<String> = c.masters.iter().map(|m| m.ip.clone()).collect();
    let base = c.masters[0].ip.rsplit_once('.').expect("ip").0.to_string();
    let prom_addr = format!("{base}.250:9090");
    let prometheus_url = format!("http://{prom_addr}");
    let config = render("prometheus.yml", &ips, &pki, work.path());
    let prometheus = Daemon::start(
        "prometheus",
        work.path(),
        "prometheus",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", work.path().join("tsdb").display()),
            format!("--web.listen-address={prom_addr}"),
            "--web.enable-remote-write-receiver".into(),
        ],
    );
    let up = all_up(
        &prometheus_url,
        &[
            ("skiff-master", 3),
            ("skiff-node", 2),
            ("kubernetes-pods", 2),
        ],
        &prometheus,
    )
    .await;
    let nodes: Vec<&Value> = up
        .iter()
        .filter(|(j, _)| j == "skiff-node")
        .map(|(_, l)| l)
        .collect();
    for a in &agents {
        assert!(
            nodes
                .iter()
                .any(|l| l["instance"] == a.name.as_str() && l["node"] == a.name.as_str()),
            "node {} named by instance and node: {nodes:?}",
            a.name
        );
    }

    // Series from each kind of target, labelled as the configuration says.
    let has_leader = eventually(
        "etcd_server_has_leader from every master",
        Duration::from_secs(30),
        || async {
            let r = query(&prometheus_url, "etcd_server_has_leader == 1")
                .await
                .ok()?;
            (r.len() == 3).then_some(r)
        },
    )
    .await;
    let mut members: Vec<&str> = has_leader
        .iter()
        .filter_map(|s| s["metric"]["master"].as_str())
        .collect();
    members.sort();
    assert_eq!(members, ["m1", "m2", "m3"]);
    let exporter = query(&prometheus_url, "skiff_test_exporter_up")
        .await
        .expect("query");
    let mut scraped: Vec<(String, String)> = exporter
        .iter()
        .map(|s| {
            assert_eq!(s["metric"]["namespace"], "default");
            assert_eq!(s["metric"]["app"], "exporter");
            (
                s["metric"]["pod"].as_str().unwrap_or("").to_string(),
                s["metric"]["node"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    scraped.sort();
    let mut expected: Vec<(String, String)> = pods
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(scraped, expected, "the pods' series, by pod and node");

    // The rules load and evaluate; every dashboard query answers.
    let rules = get_json(&format!("{prometheus_url}/api/v1/rules"))
        .await
        .expect("rules");
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert!(loaded.len() >= 12, "{rules}");
    eventually("every rule evaluated", Duration::from_secs(30), || async {
        let rules = get_json(&format!("{prometheus_url}/api/v1/rules")).await?;
        let all_ok = rules["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .all(|r| r["health"] == "ok");
        all_ok.then_some(())
    })
    .await;
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana-dashboard.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    for q in dashboard_queries(&dash) {
        if let Err(e) = query(&prometheus_url, &q).await {
            panic!("dashboard query failed: {e}");
        }
    }
    let masters_up = query(&prometheus_url, "sum(up{job=\"skiff-master\"})")
        .await
        .expect("query");
    assert_eq!(masters_up[0]["value"][1], "3");

    // vmagent, through Kubernetes service discovery against the API,
    // writing to that Prometheus.
    let vm_addr = format!("{base}.251:8429");
    let vm_url = format!("http://{vm_addr}");
    let config = render("vmagent.yml", &ips, &pki, work.path());
    let vmagent = Daemon::start(
        "vmagent",
        work.path(),
        "vmagent",
        &[
            format!("-promscrape.config={}", config.display()),
            "-promscrape.config.strictParse".into(),
            "-promscrape.httpSDCheckInterval=2s".into(),
            format!("-httpListenAddr={vm_addr}"),
            format!("-remoteWrite.url={prometheus_url}/api/v1/write"),
            "-remoteWrite.label=scraper=vmagent".into(),
            format!(
                "-remoteWrite.tmpDataPath={}",
                work.path().join("vmagent").display()
            ),
        ],
    );
    let up = all_up(
        &vm_url,
        &[
            ("skiff-master", 3),
            ("skiff-node", 2),
            ("kubernetes-pods", 2),
            ("kubernetes-service-endpoints", 2),
            ("kubernetes-service-endpointslices", 2),
        ],
        &vmagent,
    )
    .await;
    for (job, labels) in &up {
        if job.starts_with("kubernetes-service") {
            assert_eq!(labels["service"], "exporter", "{labels}");
        }
    }
    let written = eventually(
        "vmagent's samples in Prometheus",
        Duration::from_secs(60),
        || async {
            let r = query(
                &prometheus_url,
                "skiff_test_exporter_up{scraper=\"vmagent\",job=\"kubernetes-service-endpointslices\"}",
            )
            .await
            .ok()?;
            (r.len() == 2).then_some(r)
        },
    )
    .await;
    assert!(written.iter().all(|s| s["metric"]["service"] == "exporter"));
    drop(vmagent);

    member_down_alert_fires_and_resolves(&mut c, &kc, &prometheus_url).await;
    drop(prometheus);
}

/// A pod whose container exits at once, for ever: the agent backs off
/// between restarts with the container waiting in CrashLoopBackOff.
const CRASH: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers:
  - name: app
    image: busybox:local
    imagePullPolicy: Never
    command: [sh, -c, "exit 3"]
"#;

/// An alert of `/api/v1/alerts`: (state, labels, activeAt).
async fn alerts(prometheus: &str, name: &str) -> Vec<(String, Value, String)> {
    let Some(v) = get_json(&format!("{prometheus}/api/v1/alerts")).await else {
        return Vec::new();
    };
    v["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["alertname"] == name)
        .map(|a| {
            (
                a["state"].as_str().unwrap_or("").to_string(),
                a["labels"].clone(),
                a["activeAt"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The state of rule `name` in `/api/v1/rules` (inactive, pending, firing).
async fn rule_state(prometheus: &str, name: &str) -> Option<String> {
    let v = get_json(&format!("{prometheus}/api/v1/rules")).await?;
    v["data"]["groups"]
        .as_array()?
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .find(|r| r["name"] == name)
        .and_then(|r| r["state"].as_str().map(str::to_string))
}

/// The `for:` of alert `name` in the shipped alerts.yml.
fn shipped_for(name: &str) -> Duration {
    let text = std::fs::read_to_string(deploy("alerts.yml")).expect("alerts.yml");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("alerts.yml is YAML");
    let rule = yaml["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
        .find(|r| r["alert"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{name} in alerts.yml"));
    let f = rule["for"].as_str().unwrap_or("0s");
    let (n, unit) = f.split_at(f.len() - 1);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("{name}: for: {f}"));
    match unit {
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(60 * n),
        _ => panic!("{name}: for: {f} is longer than this test can wait"),
    }
}

/// kill -9 a follower master: the real Prometheus, on the shipped rules,
/// sees its target down, SkiffMemberDown pending and then firing once its
/// `for:` has passed, while the API answers through another master; a
/// crash-looping pod shows in kube_pod_container_status_waiting_reason
/// meanwhile. Restarted, the master is scraped again and the alert
/// resolves.
async fn member_down_alert_fires_and_resolves(c: &mut Cluster, kc: &Path, prometheus: &str) {
    const ALERT: &str = "SkiffMemberDown";
    let hold = shipped_for(ALERT);
    assert!(
        hold <= Duration::from_secs(60),
        "{ALERT} for: {hold:?}: this test waits it out, so it must stay <= 1m"
    );
    let (ok, _, err) = kubectl_stdin(kc, &["apply", "-f", "-"], Some(CRASH));
    assert!(ok, "kubectl apply crash: {err}");
    assert_eq!(
        rule_state(prometheus, ALERT).await.as_deref(),
        Some("inactive")
    );

    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let victim = (leader + 1) % 3;
    let other = (victim + 1) % 3;
    let kc_other = c.kubeconfig(other);
    let name = c.masters[victim].name.clone();
    let instance = format!("{}:2381", c.masters[victim].ip);
    // Prometheus' own scrape, not what vmagent wrote here earlier (its
    // series, labelled scraper="vmagent", linger for the lookback window).
    let down = format!("up{{job=\"skiff-master\",instance=\"{instance}\",scraper=\"\"}}");
    let killed = std::time::Instant::now();
    c.kill(victim);

    eventually(
        &format!("{down} == 0 in Prometheus"),
        Duration::from_secs(20),
        || async {
            let r = query(prometheus, &down).await.ok()?;
            (r.len() == 1 && r[0]["value"][1] == "0").then_some(())
        },
    )
    .await;
    let pending = eventually(
        &format!("{ALERT} pending for {name}"),
        Duration::from_secs(20),
        || async {
            let a = alerts(prometheus, ALERT).await;
            (a.len() == 1 && a[0].0 == "pending").then(|| a[0].clone())
        },
    )
    .await;
    assert_eq!(pending.1["instance"], instance.as_str(), "{:?}", pending.1);
    assert_eq!(pending.1["master"], name.as_str(), "{:?}", pending.1);

    // The API goes on through the other masters.
    let (ok, out, err) = kubectl(&kc_other, &["get", "nodes", "-o", "name"]);
    assert!(
        ok && out.lines().count() == 2,
        "get nodes via m{}: {out}{err}",
        other + 1
    );
    let (ok, _, err) = kubectl(
        &kc_other,
        &["create", "configmap", "while-down", "--from-literal=k=v"],
    );
    assert!(ok, "create configmap via m{}: {err}", other + 1);
    let (ok, out, err) = kubectl(
        &kc_other,
        &["get", "configmap", "while-down", "-o", "jsonpath={.data.k}"],
    );
    assert!(ok && out == "v", "read back: {out}{err}");

    // The crash loop, as kube-state-metrics names it, from the leader.
    let waiting = eventually(
        "kube_pod_container_status_waiting_reason{reason=\"CrashLoopBackOff\"} for pod crash",
        Duration::from_secs(60),
        || async {
            let r = query(
                prometheus,
                "kube_pod_container_status_waiting_reason{job=\"skiff-master\",scraper=\"\",pod=\"crash\",reason=\"CrashLoopBackOff\"} == 1",
            )
            .await
            .ok()?;
            (r.len() == 1).then(|| r[0]["metric"].clone())
        },
    )
    .await;
    assert_eq!(waiting["namespace"], "default", "{waiting}");
    assert_eq!(waiting["container"], "app", "{waiting}");

    let firing = eventually(
        &format!("{ALERT} firing for {name}"),
        hold + Duration::from_secs(30),
        || async {
            let a = alerts(prometheus, ALERT).await;
            (a.len() == 1 && a[0].0 == "firing").then(|| a[0].clone())
        },
    )
    .await;
    let waited = killed.elapsed();
    assert!(
        waited >= hold,
        "{ALERT} fired {waited:?} after the kill, before its for: {hold:?}"
    );
    assert_eq!(firing.1["instance"], instance.as_str());
    assert_eq!(firing.1["severity"], "critical");
    assert_eq!(
        firing.2, pending.2,
        "one alert, active since the first miss"
    );
    // Two of three answer: a quorum, so that alert stays quiet.
    assert!(alerts(prometheus, "SkiffInsufficientMembers")
        .await
        .is_empty());

    // Back the way the harness restarts masters: same flags, same data.
    c.spawn(victim);
    eventually(
        &format!("{down} == 1 again"),
        Duration::from_secs(60),
        || async {
            let r = query(prometheus, &down).await.ok()?;
            (r.len() == 1 && r[0]["value"][1] == "1").then_some(())
        },
    )
    .await;
    eventually(
        &format!("{ALERT} resolved"),
        Duration::from_secs(20),
        || async {
            let quiet = alerts(prometheus, ALERT).await.is_empty();
            (quiet && rule_state(prometheus, ALERT).await.as_deref() == Some("inactive"))
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "member down: firing {:?} after the kill, resolved {:?} after it",
        waited,
        killed.elapsed()
    );
}
