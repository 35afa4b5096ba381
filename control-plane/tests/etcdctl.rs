//! The real etcdctl 3.4 against a 3-master cluster, asserting its output.

mod common;

use std::time::Duration;

use common::{etcdctl, eventually, Cluster};

fn ok(c: &Cluster, args: &[&str]) -> String {
    ok_at(c, &c.endpoints(), args)
}

/// etcdctl against `endpoints` only, with the cluster's client certificate.
fn ok_at(c: &Cluster, endpoints: &str, args: &[&str]) -> String {
    let tls = c.etcdctl_tls();
    let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    let (success, out, err) = etcdctl(endpoints, &all);
    assert!(success, "etcdctl {args:?} failed: {err}");
    out
}

/// The store's revision (the cluster is idle once started).
fn revision(c: &Cluster) -> i64 {
    let json: serde_json::Value =
        serde_json::from_str(&ok(c, &["get", "/none", "-w", "json"])).expect("json");
    json["header"]["revision"].as_i64().expect("revision")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_txn_compaction_and_json() {
    let c = Cluster::start(3, &[]).await;
    let eps = c.endpoints();
    let base = revision(&c);
    assert_eq!(ok(&c, &["put", "/a/1", "one"]), "OK\n");
    assert_eq!(ok(&c, &["put", "/a/2", "two"]), "OK\n");
    assert_eq!(ok(&c, &["put", "/a/1", "uno"]), "OK\n");
    assert_eq!(ok(&c, &["get", "/a", "--prefix"]), "/a/1\nuno\n/a/2\ntwo\n");
    let rev = |n: i64| format!("--rev={}", base + n);
    assert_eq!(ok(&c, &["get", "/a/1", &rev(1)]), "/a/1\none\n");
    assert_eq!(
        ok(&c, &["get", "/a", "--prefix", "--keys-only"]),
        "/a/1\n\n/a/2\n\n"
    );

    let json: serde_json::Value =
        serde_json::from_str(&ok(&c, &["get", "/a/1", "-w", "json"])).expect("json");
    assert_eq!(json["header"]["revision"], base + 3);
    let kv = &json["kvs"][0];
    assert_eq!(kv["create_revision"], base + 1);
    assert_eq!(kv["mod_revision"], base + 3);
    assert_eq!(kv["version"], 2);
    assert_eq!(kv["value"], "dW5v"); // base64("uno")

    // A transaction: compare, then branches.
    let (success, out, err) = {
        let mut child = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .env_remove("ETCDCTL_ENDPOINTS")
            .arg(format!("--endpoints={eps}"))
            .args(c.etcdctl_tls())
            .arg("txn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("etcdctl txn");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"value(\"/a/1\") = \"uno\"\n\nput /a/3 three\n\nput /a/3 never\n\n")
            .expect("write");
        let o = child.wait_with_output().expect("txn");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert!(success, "txn: {err}");
    assert_eq!(out, "SUCCESS\n\nOK\n");
    assert_eq!(ok(&c, &["get", "/a/3", "--print-value-only"]), "three\n");

    assert_eq!(ok(&c, &["del", "/a", "--prefix"]), "3\n");
    assert_eq!(ok(&c, &["get", "/a", "--prefix"]), "");
    let at = (base + 3).to_string();
    assert_eq!(
        ok(&c, &["compaction", &at]),
        format!("compacted revision {at}\n")
    );
    let (success, _, err) = c.etcdctl(&["get", "/a/1", &rev(2)]);
    assert!(
        !success && err.contains("required revision has been compacted"),
        "{err}"
    );
    // Still readable at the compaction point.
    assert_eq!(ok(&c, &["get", "/a/1", &rev(3)]), "/a/1\nuno\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_revision_and_live() {
    let c = Cluster::start(3, &[]).await;
    let eps = c.endpoints();
    ok(&c, &["put", "/w/a", "1"]);
    ok(&c, &["put", "/w/b", "2"]);
    ok(&c, &["put", "/other", "x"]);
    let watcher = std::process::Command::new("timeout")
        .args([
            "4",
            "etcdctl",
            &format!("--endpoints={eps}"),
            "watch",
            "/w",
            "--prefix",
            "--rev=1",
        ])
        .args(c.etcdctl_tls())
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("watch");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ok(&c, &["del", "/w/a"]);
    ok(&c, &["put", "/w/c", "3"]);
    let out = watcher.wait_with_output().expect("watch output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text,
        "PUT\n/w/a\n1\nPUT\n/w/b\n2\nDELETE\n/w/a\n\nPUT\n/w/c\n3\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases() {
    let c = Cluster::start(3, &[]).await;
    let eps = c.endpoints();
    let granted = ok(&c, &["lease", "grant", "3"]);
    // "lease 694d77aa9e38260f granted with TTL(3s)"
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    assert!(granted.ends_with("granted with TTL(3s)\n"), "{granted}");
    ok(&c, &["put", "/leased", "v", &format!("--lease={id}")]);
    let ttl = ok(&c, &["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(3s)") && ttl.contains("attached keys([/leased])"),
        "{ttl}"
    );
    assert!(ok(&c, &["lease", "list"]).contains(&id));
    let ka = std::process::Command::new("timeout")
        .args([
            "2",
            "etcdctl",
            &format!("--endpoints={eps}"),
            "lease",
            "keep-alive",
            &id,
        ])
        .args(c.etcdctl_tls())
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .output()
        .expect("keep-alive");
    let ka = String::from_utf8_lossy(&ka.stdout);
    assert!(
        ka.contains(&format!("lease {id} keepalived with TTL(3)")),
        "{ka}"
    );
    // Expiry is decided by the leader and removes the key.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ok(&c, &["get", "/leased"]), "");
    assert!(ok(&c, &["lease", "timetolive", &id]).contains("already expired"));

    let second = ok(&c, &["lease", "grant", "60"]);
    let id2 = second
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    ok(&c, &["put", "/leased2", "v", &format!("--lease={id2}")]);
    assert_eq!(
        ok(&c, &["lease", "revoke", &id2]),
        format!("lease {id2} revoked\n")
    );
    assert_eq!(ok(&c, &["get", "/leased2"]), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_status_and_health() {
    let mut c = Cluster::start(3, &[]).await;
    let eps = c.endpoints();
    let rows: Vec<String> = c
        .masters
        .iter()
        .map(|m| {
            format!(
                ", started, {}, https://{}:2380, https://{}:2379, false",
                m.name, m.ip, m.ip
            )
        })
        .collect();
    // A master announces its client URLs through the log once it is up
    // (etcd's publish); on a busy machine that can trail the election.
    eventually(
        "every master's client URLs",
        Duration::from_secs(15),
        || {
            let list = ok(&c, &["member", "list"]);
            let all = rows.iter().all(|r| list.contains(r.as_str()));
            async move { all.then_some(()) }
        },
    )
    .await;
    // etcdctl prints health results on stderr.
    let (healthy, out, err) = c.etcdctl(&["endpoint", "health"]);
    assert!(healthy, "{err}");
    let health = format!("{out}{err}");
    assert_eq!(
        health
            .matches("is healthy: successfully committed proposal")
            .count(),
        3,
        "{health}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&ok(&c, &["endpoint", "status", "-w", "json"])).expect("json");
    let arr = status.as_array().expect("array");
    assert_eq!(arr.len(), 3);
    let leaders: Vec<_> = arr.iter().map(|s| s["Status"]["leader"].clone()).collect();
    assert!(
        leaders
            .iter()
            .all(|l| *l == leaders[0] && l.as_u64() != Some(0)),
        "{leaders:?}"
    );
    let is_leader = arr
        .iter()
        .filter(|s| s["Status"]["header"]["member_id"] == s["Status"]["leader"])
        .count();
    assert_eq!(is_leader, 1);

    // Add a fourth master, start it, and see it take part.
    let ip4 = format!("{}.4", c.masters[0].ip.rsplit_once('.').expect("ip").0);
    let added = ok(
        &c,
        &[
            "member",
            "add",
            "m4",
            &format!("--peer-urls=https://{ip4}:2380"),
        ],
    );
    assert!(added.contains("added to cluster"), "{added}");
    let m4 = c.add_master();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let id4 = loop {
        let list = ok(&c, &["member", "list", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&list).expect("json");
        let found = v["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["name"] == "m4")
            .cloned();
        if let Some(m) = found {
            break m["ID"].as_u64().expect("id");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "m4 never published itself:\n{}",
            c.log(m4)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    ok(&c, &["put", "/after-add", "yes"]);
    assert_eq!(
        ok_at(
            &c,
            &format!("https://{ip4}:2379"),
            &["get", "/after-add", "--print-value-only"]
        ),
        "yes\n"
    );

    let removed = ok_at(&c, &eps, &["member", "remove", &format!("{id4:x}")]);
    assert!(removed.contains("removed from cluster"), "{removed}");
    let list = ok_at(&c, &eps, &["member", "list"]);
    assert!(!list.contains("m4"), "{list}");
    ok_at(&c, &eps, &["put", "/after-remove", "yes"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_perf_small_load_passes() {
    let c = Cluster::start(3, &[]).await;
    let out = ok(&c, &["check", "perf", "--load=s"]);
    assert!(out.contains("PASS: Throughput is"), "{out}");
    assert!(out.trim_end().ends_with("PASS"), "{out}");
}
