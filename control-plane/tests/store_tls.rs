//! Mutual TLS on the store's ports, as etcd's `--client-cert-auth` and
//! `--peer-client-cert-auth`: the real etcdctl with the client certificate
//! works, without one (or with a certificate that is not an
//! administrator's) it is refused; the peer port takes masters only; a
//! master's certificate is renewed in place under a steady write load with
//! no failed request; and plaintext needs the explicit flag.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{etcdctl, put, Cluster};

/// etcdctl against `cluster` with the TLS flags given (not the cluster's).
fn etcdctl_with(cluster: &Cluster, tls: &[String], args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
    all.push("--dial-timeout=2s");
    all.push("--command-timeout=3s");
    all.extend_from_slice(args);
    etcdctl(&cluster.endpoint(0), &all)
}

/// The serial number and end date of the certificate `address` serves.
fn served_certificate(cluster: &Cluster, address: &str) -> String {
    let pki = cluster.pki();
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-connect", address, "-CAfile"])
        .arg(pki.join("ca.crt"))
        .arg("-cert")
        .arg(pki.join("etcd-client.crt"))
        .arg("-key")
        .arg(pki.join("etcd-client.key"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let pem = String::from_utf8_lossy(&s_client.stdout).into_owned();
    s_client.stdout.clear();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-enddate"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl x509");
    use std::io::Write;
    x509.stdin
        .take()
        .expect("stdin")
        .write_all(pem.as_bytes())
        .expect("write");
    let out = x509.wait_with_output().expect("openssl x509");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_checked() {
    // A short lifetime, so that the renewal happens within the test.
    let c = Cluster::start(3, &["--master-cert-validity", "24s"]).await;
    let pki = c.pki();

    // With the client certificate init wrote: served.
    let (ok, out, err) = c.etcdctl(&["put", "/tls/a", "1"]);
    assert!(ok && out == "OK\n", "{out}{err}");

    // Without a client certificate: refused in the handshake.
    let ca_only = vec![format!("--cacert={}", pki.join("ca.crt").display())];
    let (ok, out, err) = etcdctl_with(&c, &ca_only, &["get", "/tls/a"]);
    assert!(!ok, "served without a client certificate: {out}");
    assert!(
        err.contains("certificate") || err.contains("tls") || err.contains("deadline"),
        "{err}"
    );

    // With a certificate from the CA that is not an administrator's (a
    // user's, as `control-plane kubeconfig --user` issues): refused too.
    let kubeconfig = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["kubeconfig", "--pki-dir"])
        .arg(&pki)
        .args(["--user", "alice", "--group", "developers"])
        .output()
        .expect("control-plane kubeconfig");
    let text = String::from_utf8_lossy(&kubeconfig.stdout).into_owned();
    let field = |k: &str| {
        use base64::Engine;
        let b64 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{k}: ")))
            .expect(k)
            .to_string();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64")
    };
    let alice_crt = c.dir.path().join("alice.crt");
    let alice_key = c.dir.path().join("alice.key");
    std::fs::write(&alice_crt, field("client-certificate-data")).expect("write");
    std::fs::write(&alice_key, field("client-key-data")).expect("write");
    let alice = vec![
        format!("--cacert={}", pki.join("ca.crt").display()),
        format!("--cert={}", alice_crt.display()),
        format!("--key={}", alice_key.display()),
    ];
    let (ok, out, err) = etcdctl_with(&c, &alice, &["get", "/tls/a"]);
    assert!(!ok, "served a non-administrator: {out}");
    assert!(
        c.log(0)
            .contains("refused a client certificate on the etcd API"),
        "{err}"
    );

    // Plaintext gRPC to the etcd port: no answer.
    let plain = format!("http://{}:2379", c.masters[0].ip);
    let (ok, out, _) = etcdctl(
        &plain,
        &["--dial-timeout=2s", "--command-timeout=3s", "get", "/tls/a"],
    );
    assert!(!ok, "served in plaintext: {out}");

    // The peer port takes masters only: the etcd client certificate (an
    // administrator's, but not a master's) is refused there.
    let peer = format!("https://{}:2380/raft.RaftPeer/Vote", c.masters[0].ip);
    let curl = |cert: &str, key: &str| {
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2"])
            .arg("--cacert")
            .arg(pki.join("ca.crt"))
            .args(["--cert", cert, "--key", key])
            .args(["-X", "POST", &peer])
            .output()
            .expect("curl")
    };
    let out = curl(
        &pki.join("etcd-client.crt").display().to_string(),
        &pki.join("etcd-client.key").display().to_string(),
    );
    assert!(
        !out.status.success(),
        "peer port served a non-master: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(c
        .log(0)
        .contains("refused a client certificate on the peer port"));

    // Renewal under load: writes through every master, one after another,
    // while each master's 24 s certificate is replaced at 16 s; not one
    // fails, and the certificate served afterwards is a new one.
    let before = served_certificate(&c, &format!("{}:2379", c.masters[1].ip));
    assert!(before.contains("serial="), "{before}");
    let mut kvs = Vec::new();
    for i in 0..3 {
        kvs.push(c.kv(i).await);
    }
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(22) {
        let kv = &mut kvs[n % 3];
        put(kv, &format!("/tls/load/{n}"), "v")
            .await
            .unwrap_or_else(|e| panic!("write {n} failed during renewal: {e}"));
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = served_certificate(&c, &format!("{}:2379", c.masters[1].ip));
    assert_ne!(before, after, "the certificate was not renewed");
    for i in 0..3 {
        assert!(
            c.log(i).contains("renewed this master's certificate"),
            "m{} did not renew",
            i + 1
        );
    }
    // New connections between masters use the new certificates: a write
    // through a follower still commits.
    let leader = c.wait_leader(Duration::from_secs(5)).await;
    let mut kv = c.kv((leader + 1) % 3).await;
    put(&mut kv, "/tls/after", "v")
        .await
        .expect("a write through a follower after the renewal");
    eprintln!("{n} writes during the renewal, none failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_needs_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_control-plane"));
        cmd.args(["run", "--name", "p1", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client",
                "127.0.0.201:2379",
                "--listen-peer",
                "127.0.0.201:2380",
                "--listen-metrics",
                "127.0.0.201:2381",
            ])
            .args(extra);
        cmd
    };
    // Neither a CA nor the flag: a clear refusal, before anything is served.
    let out = run(&[]).output().expect("control-plane run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--plaintext-store"), "{err}");
    // TLS on, but an http:// peer URL: refused too.
    let out = run(&[
        "--plaintext-store",
        "--initial-cluster",
        "p1=https://127.0.0.201:2380",
    ])
    .output()
    .expect("control-plane run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must be http://"), "{err}");

    // With the flag: the plain etcdctl works.
    let mut child = run(&[
        "--plaintext-store",
        "--initial-cluster",
        "p1=http://127.0.0.201:2380",
    ])
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("control-plane run");
    let served = eventually_sync(Duration::from_secs(20), || {
        let (ok, out, _) = etcdctl(
            "http://127.0.0.201:2379",
            &["--dial-timeout=1s", "put", "/plain", "yes"],
        );
        (ok && out == "OK\n").then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(served.is_some(), "the plaintext master never served");
}

fn eventually_sync<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}
