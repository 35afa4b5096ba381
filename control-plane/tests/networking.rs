//! Service networking on two nodes, each a host of its own (its own
//! network namespace, address and Docker engine, made by
//! deploy/node-host): pods get addresses from their node's podCIDR and
//! reach each other across nodes by IP with their source address kept;
//! Services work by name and by virtual IP through each agent's nftables
//! table, a backend through its own Service too; NodePorts answer on every
//! node's address from outside (with externalTrafficPolicy Local, only
//! the node's own pods, seeing the client's address); externalIPs and
//! LoadBalancers; pods leave the cluster with their node's address;
//! cluster DNS answers for headless Services, StatefulSet pods,
//! ExternalNames and named ports, and dnsPolicy None and Default are kept;
//! a deleted node's pod route goes. All with the real kubectl, Docker and
//! nftables.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::agents::{create_token, node_ready, one_at_a_time, require_images, SETTLE};
use common::hosts::{Lan, NodeHost};
use common::{eventually, kubectl, kubectl_stdin, Cluster};
use serde_json::Value;

fn ok((good, out, err): (bool, String, String)) -> String {
    assert!(good, "kubectl failed: {err}\n{out}");
    out
}

async fn until<F: FnMut() -> Option<T>, T>(what: &str, mut f: F) -> T {
    eventually(what, SETTLE, || std::future::ready(f())).await
}

/// Each backend answers / with its own hostname, /cgi-bin/ip with the
/// address the request came from, and is ready while /w/ready exists.
const APPS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
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
        command:
        - sh
        - -c
        - |
          mkdir -p /w/cgi-bin
          hostname > /w/index.html
          printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho $REMOTE_ADDR\n' > /w/cgi-bin/ip
          chmod +x /w/cgi-bin/ip
          touch /w/ready
          exec httpd -f -p 8080 -h /w
        readinessProbe:
          exec: {command: [test, -f, /w/ready]}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: web.default.svc.cluster.local
---
apiVersion: v1
kind: Service
metadata: {name: sts}
spec:
  clusterIP: None
  selector: {app: sts}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: sts}
spec:
  serviceName: sts
  replicas: 1
  selector: {matchLabels: {app: sts}}
  template:
    metadata: {labels: {app: sts}}
    spec:
      containers:
      - {name: c, image: busybox:local, imagePullPolicy: Never, command: [sleep, "3600"]}
"#;

/// A pod named `name` on `node` that sleeps, its spec with `extra` lines.
fn sleeper(name: &str, node: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
{extra}
  containers:
  - {{name: c, image: busybox:local, imagePullPolicy: Never, command: [sleep, "3600"]}}
"#
    )
}

struct Env {
    kc: std::path::PathBuf,
}

impl Env {
    /// Run `script` in the client pod: its stdout, or Err(stderr).
    fn sh(&self, script: &str) -> Result<String, String> {
        let (good, out, err) = kubectl(&self.kc, &["exec", "client", "--", "sh", "-c", script]);
        if good {
            Ok(out)
        } else {
            Err(format!("{err}{out}"))
        }
    }

    /// `n` fetches of `url` from the client: the answers, in order.
    fn fetch(&self, url: &str, n: usize) -> Vec<String> {
        let script =
            format!("for i in $(seq {n}); do timeout 3 wget -qO- {url} || echo FAILED; done");
        self.sh(&script)
            .unwrap_or_else(|e| e)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn pods(&self, selector: &str) -> Vec<Value> {
        let out = ok(kubectl(
            &self.kc,
            &["get", "pods", "-l", selector, "-o", "json"],
        ));
        let list: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        list["items"].as_array().cloned().unwrap_or_default()
    }

    fn ready_pods(&self, selector: &str) -> Vec<Value> {
        self.pods(selector)
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .collect()
    }

    /// Ready endpoint addresses of Service `svc`'s slice.
    fn ready_endpoints(&self, svc: &str) -> BTreeSet<String> {
        let (_, out, _) = kubectl(
            &self.kc,
            &[
                "get",
                "endpointslices",
                "-l",
                &format!("kubernetes.io/service-name={svc}"),
                "-o",
                "json",
            ],
        );
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect()
    }

    fn field(&self, args: &[&str]) -> String {
        ok(kubectl(&self.kc, args)).trim().to_string()
    }
}

fn names(pods: &[Value]) -> BTreeSet<String> {
    pods.iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_reach_each_other_and_services_across_nodes() {
    let _one = one_at_a_time().await;
    require_images();
    let lan = Lan::up("n", 3);
    let cluster = Cluster::start_with_agents_on(3, &[], &lan.master_ips(3)).await;
    let kc = cluster.kubeconfig(0);
    let server = format!("{}:6444", lan.master_ips(3)[0]);
    let join = create_token(&cluster, &["--agent-server", &server]);
    let host_a = NodeHost::up(&lan, "n", 1, cluster.dir.path());
    let host_b = NodeHost::up(&lan, "n", 2, cluster.dir.path());
    let mut a = cluster.join_in("a", &join, &host_a).expect("node a joins");
    let mut b = cluster.join_in("b", &join, &host_b).expect("node b joins");
    a.run(&["--proxy-check-period", "1s"]);
    b.run(&["--proxy-check-period", "1s"]);
    let env = Env { kc: kc.clone() };
    let result = std::panic::AssertUnwindSafe(async {
        let cidr_b = scenario(&env, &a.name, &b.name, &host_a, &host_b).await;
        in_cluster_clients(&env, &cluster, &a.name, &a.dir).await;
        // A node deleted: the others drop their route to its pods.
        b.kill();
        ok(kubectl(&kc, &["delete", "node", &b.name]));
        until("node a's route to b's pods gone", || {
            let (_, routes, _) = host_a.exec(&["ip", "route", "show", "proto", "88"]);
            (!routes.contains(&cidr_b)).then_some(())
        })
        .await;
    });
    let outcome = futures::FutureExt::catch_unwind(result).await;
    if let Err(panic) = outcome {
        for agent in [&a, &b] {
            let log = agent.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- last lines of {}'s log", agent.name);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        for h in [&host_a, &host_b] {
            eprintln!("---- {}'s nftables", h.name);
            eprintln!(
                "{}",
                h.exec(&["nft", "list", "table", "ip", "skiff-proxy"]).1
            );
        }
        std::panic::resume_unwind(panic);
    }
    a.kill();
    b.kill();
}

/// The scenario on nodes `a` and `b`; returns b's podCIDR.
async fn scenario(env: &Env, a: &str, b: &str, host_a: &NodeHost, host_b: &NodeHost) -> String {
    let kc = &env.kc;
    for node in [a, b] {
        until(&format!("{node} Ready"), || {
            (node_ready(kc, node) == "True").then_some(())
        })
        .await;
    }
    // Each node has a podCIDR of its own.
    let cidr = |n: &str| env.field(&["get", "node", n, "-o", "jsonpath={.spec.podCIDR}"]);
    let (cidr_a, cidr_b) = until("both podCIDRs", || {
        let (x, y) = (cidr(a), cidr(b));
        (!x.is_empty() && !y.is_empty()).then_some((x, y))
    })
    .await;
    assert_ne!(cidr_a, cidr_b);
    assert!(
        cidr_a.starts_with("10.244.") && cidr_a.ends_with("/24"),
        "{cidr_a}"
    );

    ok(kubectl_stdin(kc, &["apply", "-f", "-"], Some(APPS)));
    ok(kubectl_stdin(
        kc,
        &["apply", "-f", "-"],
        Some(&sleeper("client", b, "")),
    ));
    let backends = until("3 web pods ready", || {
        let ready = env.ready_pods("app=web");
        (ready.len() == 3).then_some(ready)
    })
    .await;
    until("the client running", || env.sh("true").ok()).await;
    let client_ip = env.field(&["get", "pod", "client", "-o", "jsonpath={.status.podIP}"]);
    let prefix_b = cidr_b.trim_end_matches(".0/24");
    assert!(
        client_ip.starts_with(&format!("{prefix_b}.")),
        "the client's address {client_ip} is from its node's podCIDR {cidr_b}"
    );
    until("the endpoints of web", || {
        (env.ready_endpoints("web").len() == 3).then_some(())
    })
    .await;

    // Pod to pod across nodes, by IP, the source address kept.
    let across = backends
        .iter()
        .find(|p| p["spec"]["nodeName"] == a)
        .expect("a web pod on node a (3 pods, 2 nodes, spread)");
    let across_ip = across["status"]["podIP"].as_str().unwrap().to_string();
    let seen = env.fetch(&format!("http://{across_ip}:8080/cgi-bin/ip"), 1);
    let seen: Vec<&str> = seen.iter().map(|s| peer(s)).collect();
    assert_eq!(
        seen,
        [client_ip.as_str()],
        "the backend saw the client's own address"
    );

    // By name and by virtual IP, every backend answers.
    let want = names(&backends);
    let vip = env.field(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    for url in [
        "http://web/",
        &format!("http://{vip}/"),
        "http://web.default.svc.cluster.local/",
    ] {
        let answers: BTreeSet<String> = env.fetch(url, 30).into_iter().collect();
        assert_eq!(answers, want, "fetching {url}");
    }

    // A pod failing readiness gets no traffic.
    let sick = want.iter().next().unwrap().clone();
    ok(kubectl(kc, &["exec", &sick, "--", "rm", "/w/ready"]));
    until("the sick pod out of the endpoints", || {
        (env.ready_endpoints("web").len() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answers: BTreeSet<String> = env.fetch("http://web/", 20).into_iter().collect();
    assert!(
        !answers.contains(&sick),
        "{sick} is not ready but answered: {answers:?}"
    );
    assert_eq!(answers.len(), 2, "{answers:?}");
    ok(kubectl(kc, &["exec", &sick, "--", "touch", "/w/ready"]));
    until("the pod back in the endpoints", || {
        (env.ready_endpoints("web").len() == 3).then_some(())
    })
    .await;

    // ClientIP affinity keeps one backend.
    ok(kubectl(
        kc,
        &[
            "patch",
            "svc",
            "web",
            "-p",
            r#"{"spec":{"sessionAffinity":"ClientIP"}}"#,
        ],
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answers: BTreeSet<String> = env.fetch("http://web/", 15).into_iter().collect();
    assert_eq!(answers.len(), 1, "affinity: {answers:?}");
    ok(kubectl(
        kc,
        &[
            "patch",
            "svc",
            "web",
            "-p",
            r#"{"spec":{"sessionAffinity":"None"}}"#,
        ],
    ));

    // A Service with no endpoints refuses at once.
    let empty = env.field(&["get", "svc", "empty", "-o", "jsonpath={.spec.clusterIP}"]);
    let started = Instant::now();
    let refused = env.sh(&format!("nc -w 3 {empty} 80 </dev/null"));
    let took = started.elapsed();
    let text = refused.expect_err("nothing can answer for a service without endpoints");
    assert!(text.contains("refused"), "{text}");
    assert!(took < Duration::from_secs(2), "refused after {took:?}");

    // NodePort, from outside the nodes, on each node's address.
    let node_port = env.field(&[
        "get",
        "svc",
        "web-np",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    for host in [host_a, host_b] {
        let mut answers = BTreeSet::new();
        for _ in 0..20 {
            let url = format!("http://{}:{node_port}/", host.ip);
            let body = reqwest::get(&url)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"))
                .text()
                .await
                .unwrap();
            answers.insert(body.trim().to_string());
        }
        assert!(
            answers.is_subset(&want) && !answers.is_empty(),
            "{answers:?}"
        );
    }

    // DNS: a headless Service, a StatefulSet pod, an ExternalName, SRV.
    let lookup = |args: &str| env.sh(&format!("nslookup {args}")).unwrap_or_else(|e| e);
    let headless = lookup("db.default.svc.cluster.local");
    for p in &backends {
        let ip = p["status"]["podIP"].as_str().unwrap();
        assert!(headless.contains(ip), "db lists {ip}: {headless}");
    }
    let sts_ip = until("sts-0 running", || {
        let ip = env.field(&["get", "pod", "sts-0", "-o", "jsonpath={.status.podIP}"]);
        (!ip.is_empty()).then_some(ip)
    })
    .await;
    let sts = until("sts-0 in DNS", || {
        let out = lookup("sts-0.sts.default.svc.cluster.local");
        out.contains(&sts_ip).then_some(out)
    })
    .await;
    assert!(sts.contains(&sts_ip), "{sts}");
    let ext = lookup("ext.default.svc.cluster.local");
    assert!(
        ext.contains("web.default.svc.cluster.local") && ext.contains(&vip),
        "ext is a CNAME to web: {ext}"
    );
    let srv = lookup("-type=SRV _http._tcp.web.default.svc.cluster.local");
    assert!(srv.contains("80 web.default.svc.cluster.local"), "{srv}");
    let missing = lookup("nothing.default.svc.cluster.local");
    assert!(missing.contains("NXDOMAIN"), "{missing}");

    // Node a routes b's pods through b's address.
    let (_, routes, _) = host_a.exec(&["ip", "route", "show", "proto", "88"]);
    assert!(
        routes.contains(&format!("{cidr_b} via {}", host_b.ip)),
        "{routes}"
    );

    hairpin_external_ips_and_local_policy(env, &backends, &vip, host_a, host_b).await;
    dns_policies(env, b).await;

    // Scale to 1: within a second of the endpoints saying so, only the
    // survivor answers.
    ok(kubectl(kc, &["scale", "deployment", "web", "--replicas=1"]));
    until("one endpoint left", || {
        (env.ready_endpoints("web").len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answers: BTreeSet<String> = env.fetch("http://web/", 10).into_iter().collect();
    let survivor = names(&env.ready_pods("app=web"));
    assert_eq!(answers, survivor, "after scaling to 1");

    // Flush the table by hand: it comes back.
    let (flushed, _, err) = host_a.exec(&["nft", "flush", "table", "ip", "skiff-proxy"]);
    assert!(flushed, "{err}");
    let table = |h: &NodeHost| h.exec(&["nft", "list", "table", "ip", "skiff-proxy"]).1;
    until("node a's table written again", || {
        let t = table(host_a);
        (t.contains("jump services") && t.contains("default/web/tcp/http")).then_some(())
    })
    .await;

    // Delete the Service: its rules are gone, on both nodes.
    ok(kubectl(kc, &["delete", "svc", "web"]));
    for h in [host_a, host_b] {
        until("web's rules gone", || {
            let t = table(h);
            (t.contains("jump services") && !t.contains("default/web/tcp/http")).then_some(())
        })
        .await;
    }
    cidr_b
}

/// The address a backend saw, as httpd's CGI gives it (IPv4 peers of
/// its IPv6 socket are written [::ffff:a.b.c.d]).
fn peer(s: &str) -> &str {
    s.trim()
        .trim_start_matches("[::ffff:")
        .trim_end_matches(']')
}

/// A backend reaching its own Service (sometimes itself); externalIPs;
/// a pod reaching outside the cluster; a LoadBalancer without a load
/// balancer; a NodePort with externalTrafficPolicy Local: only the node's
/// own endpoints answer, and they see the client's address.
async fn hairpin_external_ips_and_local_policy(
    env: &Env,
    backends: &[Value],
    vip: &str,
    host_a: &NodeHost,
    host_b: &NodeHost,
) {
    let kc = &env.kc;
    let me = backends[0]["metadata"]["name"].as_str().unwrap();
    let script =
        format!("for i in $(seq 20); do timeout 3 wget -qO- http://{vip}/ || echo FAILED; done");
    let (_, out, err) = kubectl(kc, &["exec", me, "--", "sh", "-c", &script]);
    let answers: BTreeSet<&str> = out.lines().map(str::trim).collect();
    assert!(
        answers.contains(me) && !answers.contains("FAILED"),
        "{me} through its own Service: {answers:?} {err}"
    );

    // An address on the nodes' link that no host holds.
    let prefix = host_a.ip.rsplit_once('.').unwrap().0;
    let external_ip = format!("{prefix}.200");
    let services = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: web-eip}}
spec:
  selector: {{app: web}}
  externalIPs: ["{external_ip}"]
  ports: [{{port: 8081, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-local}}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-lb}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    );
    ok(kubectl_stdin(kc, &["apply", "-f", "-"], Some(&services)));
    let want = names(backends);

    // Pods reaching outside the cluster leave with their node's address:
    // this test, on the link, is outside.
    let outside = format!("{prefix}.1");
    let listener = tokio::net::TcpListener::bind((outside.as_str(), 0))
        .await
        .expect("a port on the link");
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut c, from)) = listener.accept().await {
            let body = from.ip().to_string();
            let reply = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = c.write_all(reply.as_bytes()).await;
        }
    });
    let seen = env.fetch(&format!("http://{outside}:{port}/"), 1);
    server.abort();
    assert_eq!(
        seen,
        std::slice::from_ref(&host_b.ip),
        "the client left as its node"
    );

    // A LoadBalancer without a load balancer: no external address, and
    // its node port answers.
    let lb = until("web-lb's node port", || {
        let v: Value =
            serde_json::from_str(&ok(kubectl(kc, &["get", "svc", "web-lb", "-o", "json"])))
                .unwrap_or(Value::Null);
        v["spec"]["ports"][0]["nodePort"].as_i64().map(|p| (p, v))
    })
    .await;
    assert!(
        lb.1["status"]["loadBalancer"]["ingress"].is_null(),
        "no external address: {}",
        lb.1["status"]
    );
    let body = reqwest::get(format!("http://{}:{}/", host_a.ip, lb.0))
        .await
        .expect("web-lb's node port")
        .text()
        .await
        .unwrap();
    assert!(want.contains(body.trim()), "{body}");
    let answers = until("web-eip answering on its external IP", || {
        let a = env.fetch(&format!("http://{external_ip}:8081/"), 20);
        let a: BTreeSet<String> = a.into_iter().collect();
        (a == want).then_some(a)
    })
    .await;
    assert_eq!(answers, want);

    let node_port = until("web-local's node port", || {
        let p = env.field(&[
            "get",
            "svc",
            "web-local",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ]);
        (!p.is_empty()).then_some(p)
    })
    .await;
    for host in [host_a, host_b] {
        let node_name = host_node(env, &host.ip);
        let local: BTreeSet<String> = env
            .ready_pods("app=web")
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node_name.as_str())
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        let base = format!("http://{}:{node_port}", host.ip);
        let get = |path: String| async move {
            let r = reqwest::Client::new()
                .get(&path)
                .timeout(Duration::from_secs(3))
                .send()
                .await;
            match r {
                Ok(r) => r.text().await.unwrap_or_default().trim().to_string(),
                Err(e) => format!("FAILED: {e}"),
            }
        };
        let mut answers = BTreeSet::new();
        let tries = if local.is_empty() { 1 } else { 12 };
        for _ in 0..tries {
            answers.insert(get(format!("{base}/")).await);
        }
        if local.is_empty() {
            assert!(
                answers.iter().all(|a| a.starts_with("FAILED")),
                "{node_name} has no web pod, yet: {answers:?}"
            );
            continue;
        }
        assert_eq!(answers, local, "web-local on {node_name}");
        let seen = get(format!("{base}/cgi-bin/ip")).await;
        assert_eq!(peer(&seen), outside, "the client's own address is kept");
    }
}

/// The node named for the host at `ip` (its InternalIP).
fn host_node(env: &Env, ip: &str) -> String {
    let out = env.field(&[
        "get",
        "nodes",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}"#,
    ]);
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(_, addr)| *addr == ip)
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| panic!("no node has address {ip}: {out}"))
}

/// dnsPolicy None takes dnsConfig alone; Default takes the node's own
/// resolver; ClusterFirst (the client) the cluster's DNS and search path.
async fn dns_policies(env: &Env, node: &str) {
    let kc = &env.kc;
    let none = r#"  dnsPolicy: None
  dnsConfig:
    nameservers: [192.0.2.53]
    searches: [example.test]
    options: [{name: ndots, value: "2"}]"#;
    let pods = format!(
        "{}---{}",
        sleeper("dns-none", node, none),
        sleeper("dns-default", node, "  dnsPolicy: Default")
    );
    ok(kubectl_stdin(kc, &["apply", "-f", "-"], Some(&pods)));
    let resolv = |pod: &str| {
        let (good, out, _) = kubectl(kc, &["exec", pod, "--", "cat", "/etc/resolv.conf"]);
        good.then_some(out)
    };
    let none = until("dns-none running", || resolv("dns-none")).await;
    let lines: Vec<&str> = none
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(lines.contains(&"nameserver 192.0.2.53"), "{none}");
    assert!(lines.contains(&"search example.test"), "{none}");
    assert!(lines.contains(&"options ndots:2"), "{none}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("nameserver")).count(),
        1,
        "{none}"
    );
    let cluster = resolv("client").expect("the client's resolv.conf");
    let cluster_ns = cluster
        .lines()
        .find(|l| l.starts_with("nameserver"))
        .expect("the cluster's nameserver")
        .to_string();
    assert!(cluster.contains("svc.cluster.local"), "{cluster}");
    let default = until("dns-default running", || resolv("dns-default")).await;
    assert!(
        !default.contains("svc.cluster.local") && !default.contains(&cluster_ns),
        "dnsPolicy Default uses the node's resolver: {default}"
    );
    ok(kubectl(
        kc,
        &["delete", "pod", "dns-none", "dns-default", "--wait=false"],
    ));
}

/// A service account, a role letting it read pods, and a pod under it on
/// `node` running the real kubectl (the host's binary, mounted) and
/// holding a Secret in a volume.
const IN_CLUSTER: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader-reads-pods}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects: [{kind: ServiceAccount, name: reader, namespace: default}]
---
apiVersion: v1
kind: Secret
metadata: {name: sealed}
stringData: {password: s3cr3t-on-tmpfs-only}
"#;

/// A client in a pod reaches the API through the `kubernetes` Service
/// with the token projected into it, is allowed what its role allows and
/// refused the rest; its token and a Secret volume are on tmpfs, nothing
/// of them on the node's disk; the token stops working with the pod.
async fn in_cluster_clients(env: &Env, cluster: &Cluster, node: &str, data_dir: &std::path::Path) {
    let kc = &env.kc;
    // The kubernetes Service: the first address of the range, every
    // master's API behind it.
    assert_eq!(
        env.field(&[
            "get",
            "svc",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}"
        ]),
        "10.96.0.1"
    );
    let masters: BTreeSet<String> = cluster.masters.iter().map(|m| m.api_ip.clone()).collect();
    until("every master behind the kubernetes Service", || {
        let seen: BTreeSet<String> = env.ready_endpoints("kubernetes").into_iter().collect();
        (seen == masters).then_some(())
    })
    .await;
    // Every namespace has the cluster CA.
    let ca = env.field(&[
        "get",
        "configmap",
        "kube-root-ca.crt",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]);
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");

    ok(kubectl_stdin(kc, &["apply", "-f", "-"], Some(IN_CLUSTER)));
    let kubectl_bin = std::fs::canonicalize(
        std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("kubectl"))
                    .find(|p| p.exists())
            })
            .expect("kubectl on PATH"),
    )
    .expect("kubectl");
    let pod = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: in-cluster}}
spec:
  serviceAccountName: reader
  nodeName: {node}
  containers:
  - name: c
    image: busybox:local
    imagePullPolicy: Never
    command: [sleep, "3600"]
    env: [{{name: HOME, value: /tmp}}]
    volumeMounts:
    - {{name: kubectl, mountPath: /usr/local/bin/kubectl, readOnly: true}}
    - {{name: sealed, mountPath: /sealed, readOnly: true}}
  volumes:
  - name: kubectl
    hostPath: {{path: {}, type: File}}
  - name: sealed
    secret: {{secretName: sealed, defaultMode: 0400}}
"#,
        kubectl_bin.display()
    );
    ok(kubectl_stdin(kc, &["apply", "-f", "-"], Some(&pod)));
    ok(kubectl(
        kc,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/in-cluster",
            "--timeout=60s",
        ],
    ));
    let spec: Value = serde_json::from_str(&ok(kubectl(
        kc,
        &["get", "pod", "in-cluster", "-o", "json"],
    )))
    .expect("pod json");
    let volume = spec["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kube-api-access-"))
        })
        .expect("the token volume added at admission");
    assert_eq!(
        volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3607,
        "{volume}"
    );
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", "in-cluster", "--"];
        all.extend_from_slice(args);
        kubectl(kc, &all)
    };
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(ok(exec(&["cat", &format!("{sa}/namespace")])), "default");
    let env_out = ok(exec(&["env"]));
    assert!(
        env_out.contains("KUBERNETES_SERVICE_HOST=10.96.0.1"),
        "{env_out}"
    );
    assert!(env_out.contains("KUBERNETES_SERVICE_PORT=443"), "{env_out}");
    // The token and the Secret are on tmpfs, with the modes asked for.
    let mounts = ok(exec(&["cat", "/proc/mounts"]));
    for path in [sa, "/sealed"] {
        assert!(
            mounts
                .lines()
                .any(|l| l.contains(&format!(" {path} tmpfs "))),
            "{path} is not a tmpfs:\n{mounts}"
        );
    }
    let mode = ok(exec(&["stat", "-L", "-c", "%a", "/sealed/password"]));
    assert_eq!(mode.trim(), "400");

    // kubectl in the pod finds the API by itself (in-cluster config), and
    // is allowed what the role allows.
    let listed = ok(exec(&[
        "/usr/local/bin/kubectl",
        "get",
        "pods",
        "-o",
        "name",
    ]));
    assert!(listed.contains("pod/in-cluster"), "{listed}");
    let (allowed, out, err) = exec(&["/usr/local/bin/kubectl", "get", "secrets"]);
    assert!(!allowed, "a pod reader listed secrets: {out}");
    assert!(
        err.contains("system:serviceaccount:default:reader") && err.contains("forbidden"),
        "{err}"
    );
    let who = ok(exec(&[
        "/usr/local/bin/kubectl",
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]));
    assert_eq!(who.trim(), "system:serviceaccount:default:reader");

    // No byte of the Secret or the token on the node's disk: the volumes
    // are tmpfs, so a search of the disk alone (one file system) finds
    // nothing.
    let token = ok(exec(&["cat", &format!("{sa}/token")]));
    let on_disk = std::process::Command::new("grep")
        .args([
            "-r",
            "-l",
            "-s",
            "--devices=skip",
            "-e",
            "s3cr3t-on-tmpfs-only",
            "-e",
            token.trim(),
        ])
        .arg(data_dir)
        .output()
        .expect("grep");
    let found = String::from_utf8_lossy(&on_disk.stdout);
    let on_disk_files: Vec<&str> = found
        .lines()
        .filter(|f| !mounted_on_tmpfs(std::path::Path::new(f)))
        .collect();
    assert!(
        on_disk_files.is_empty(),
        "secret bytes on disk: {on_disk_files:?}"
    );

    // The token works from outside while the pod lives, not after.
    let with_token = |args: &[&str]| {
        let mut cmd = std::process::Command::new("kubectl");
        cmd.args(["--server", &cluster.api_url(0), "--certificate-authority"])
            .arg(cluster.pki().join("ca.crt"))
            .args(["--token", token.trim()])
            .args(args);
        let out = cmd.output().expect("kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (works, err) = with_token(&["get", "pods"]);
    assert!(works, "{err}");
    ok(kubectl(kc, &["delete", "pod", "in-cluster", "--wait=true"]));
    let (works, err) = with_token(&["get", "pods"]);
    assert!(
        !works && err.contains("pod default/in-cluster has been deleted"),
        "{err}"
    );
    ok(kubectl_stdin(kc, &["delete", "-f", "-"], Some(IN_CLUSTER)));
}

/// Whether `path` lies on a tmpfs (by the mount table).
fn mounted_on_tmpfs(path: &std::path::Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 2 && f[2] == "tmpfs").then(|| std::path::PathBuf::from(f[1]))
        })
        .any(|m| path.starts_with(&m))
}
