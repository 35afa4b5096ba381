//! A node's identity, with real masters and a real agent: a join registers
//! the Node and a second join cannot take its name; a deleted Node's agent
//! is cut off within seconds, says so once in its log and does not spin,
//! and its renewals are refused; a certificate issued before the deletion
//! stays void when a Node of that name is made again, on the agent port
//! and on the Kubernetes API's; an identity whose
//! key is not its certificate's is reported at start.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::agents::{
    agent_bin, create_token, identity_kubeconfig, node_ready, one_at_a_time, require_images,
};
use common::{eventually, kubectl, strip_ansi, Cluster};
use node_agent::identity::{self, Identity};
use node_agent::session::connect;
use proto::agent::{agent_request, frame, AgentRequest, CertificateResponse, RenewRequest};

const CUT_OFF_WITHIN: Duration = Duration::from_secs(5);

fn ok((good, out, err): (bool, String, String)) -> String {
    assert!(good, "kubectl failed: {err}\n{out}");
    out
}

fn uid_of(kc: &Path, node: &str) -> String {
    kubectl(kc, &["get", "node", node, "-o", "jsonpath={.metadata.uid}"]).1
}

/// Ask `server` to renew `id`'s certificate: Ok(certificate), or Err(why
/// not: the master's refusal, or why it closed the connection).
async fn renew(server: &str, id: &Identity) -> Result<String, String> {
    let endpoint = connect::endpoint().map_err(|e| e.to_string())?;
    let tls = id.client_tls().map_err(|e| e.to_string())?;
    let conn = connect::connect(&endpoint, server, tls, Duration::from_secs(5))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let (_, csr_pem) = identity::new_key_and_csr(&id.cluster.node_name).unwrap();
    let answer: anyhow::Result<CertificateResponse> = connect::request(
        &conn,
        AgentRequest {
            request: Some(agent_request::Request::Renew(RenewRequest { csr_pem })),
        },
        frame::MAX_FRAME,
    )
    .await;
    if let Some(reason) = connect::refusal(&conn) {
        return Err(reason);
    }
    let answer = answer.map_err(|e| format!("{e:#}"))?;
    if !answer.refused.is_empty() {
        return Err(answer.refused);
    }
    Ok(answer.certificate_pem)
}

/// `node-agent join` under `name` into `dir`; Err(stderr) if refused.
fn join_as(join: &common::agents::JoinCommand, name: &str, dir: &Path) -> Result<(), String> {
    let out = Command::new(agent_bin())
        .args(["join", "--server", &join.server, "--token", &join.token])
        .args(["--discovery-token-ca-cert-hash", &join.ca_hash])
        .args(["--node-name", name, "--data-dir"])
        .arg(dir)
        .output()
        .expect("node-agent join");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_is_cut_off_and_its_name_cannot_be_taken() {
    let _serial = one_at_a_time().await;
    require_images();
    // Certificates of 15 s: the agent renews every 10 s or so, so its own
    // renewal is seen to work, then to be refused.
    let cluster = Cluster::start(3, &["--node-cert-validity", "15s"]).await;
    let kc = cluster.kubeconfig(0);
    let join = create_token(&cluster, &[]);
    let mut n1 = cluster.join("n1", &join).expect("n1 joins");
    let name = n1.name.clone();

    // The join registered the Node; a second join under its name, with a
    // fresh token, is refused and gets no certificate.
    let uid = uid_of(&kc, &name);
    assert!(!uid.is_empty(), "no Node {name} after its join");
    let fresh = create_token(&cluster, &[]);
    let impostor = cluster.dir.path().join("impostor");
    let err = join_as(&fresh, &name, &impostor).expect_err("a second join under n1's name");
    assert!(
        err.contains(&format!("a Node named {name} already exists")),
        "{err}"
    );
    assert!(!identity::joined(&impostor), "an identity was issued");
    assert_eq!(uid_of(&kc, &name), uid, "the Node was replaced");

    n1.run(&[]);
    eventually("n1 Ready", Duration::from_secs(60), || async {
        (node_ready(&kc, &name) == "True").then_some(())
    })
    .await;
    let first = Identity::load(&n1.dir).unwrap();
    // A member's renewal works (the test's own, then the agent's).
    renew(&join.server, &first)
        .await
        .expect("a member's certificate renewed");
    eventually(
        "the agent's certificate renewed",
        Duration::from_secs(30),
        || async {
            let now = Identity::load(&n1.dir).ok()?;
            (now.cert_pem != first.cert_pem).then_some(())
        },
    )
    .await;
    let before = Identity::load(&n1.dir).unwrap();
    // The API port takes the node's certificate for its own Node.
    let api = cluster.api_url(0);
    let as_n1 = identity_kubeconfig(&n1.dir, &api, &cluster.dir.path().join("as-n1"));
    ok(kubectl(&as_n1, &["get", "node", &name]));

    // Deleted: the agent is cut off within seconds and says why, once.
    let deleted_at = Instant::now();
    ok(kubectl(&kc, &["delete", "node", &name]));
    let refusals = |log: &str| {
        strip_ansi(log)
            .lines()
            .filter(|l| l.contains("is no longer a member of the cluster"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let line = eventually("the agent refused", CUT_OFF_WITHIN * 2, || async {
        refusals(&n1.log()).into_iter().next()
    })
    .await;
    let cut_off_in = deleted_at.elapsed();
    eprintln!("agent cut off {cut_off_in:?} after its Node was deleted: {line}");
    assert!(
        cut_off_in < CUT_OFF_WITHIN,
        "cut off only after {cut_off_in:?}"
    );
    assert!(
        line.contains("was deleted") && line.contains("join"),
        "{line}"
    );
    // Not spinning: it waits before trying again, and its reports did not
    // bring the Node back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let lines = refusals(&n1.log());
    assert_eq!(lines.len(), 1, "refused again and again: {lines:#?}");
    let (found, _, _) = kubectl(&kc, &["get", "node", &name]);
    assert!(!found, "the deleted Node came back");
    // Nor does the API port take its certificate any more.
    let (worked, out, err) = kubectl(&as_n1, &["get", "--raw", &format!("/api/v1/nodes/{name}")]);
    assert!(!worked, "a deleted node's certificate still works: {out}");
    assert!(
        err.contains("logged in") && err.contains("its Node was deleted"),
        "{err}"
    );

    // Its renewal is refused, by the agent's own hand and by ours.
    let renewal = eventually(
        "the agent's renewal refused",
        Duration::from_secs(20),
        || async {
            strip_ansi(&n1.log())
                .lines()
                .find(|l| l.contains("renewing the node certificate") && l.contains("refused"))
                .map(str::to_string)
        },
    )
    .await;
    assert!(renewal.contains("was deleted"), "{renewal}");
    let refused = renew(&join.server, &before)
        .await
        .expect_err("a deleted node's renewal");
    assert!(refused.contains("was deleted"), "{refused}");
    n1.kill();

    // The name is free again: a new join takes it, with a Node of its own.
    // The certificate from before the deletion stays void.
    let again = cluster.dir.path().join("again");
    join_as(&create_token(&cluster, &[]), &name, &again).expect("joining again after the delete");
    let new_uid = uid_of(&kc, &name);
    assert!(!new_uid.is_empty() && new_uid != uid, "{new_uid} vs {uid}");
    let refused = renew(&join.server, &before)
        .await
        .expect_err("a certificate from before the deletion");
    assert!(
        refused.contains("created again") && refused.contains(&uid),
        "{refused}"
    );
    let rejoined = Identity::load(&again).unwrap();
    renew(&join.server, &rejoined)
        .await
        .expect("the new node's certificate renewed");
    let (worked, _, err) = kubectl(&as_n1, &["get", "node", &name]);
    assert!(
        !worked,
        "a certificate from before the deletion works on the API port"
    );
    assert!(
        err.contains("logged in") && err.contains("created again"),
        "{err}"
    );
    let as_again = identity_kubeconfig(&again, &api, &cluster.dir.path().join("as-again"));
    ok(kubectl(&as_again, &["get", "node", &name]));

    // A key that is not its certificate's: the agent says so at start.
    let mismatched = cluster.dir.path().join("mismatched");
    std::fs::create_dir(&mismatched).unwrap();
    for f in [identity::CA, identity::CLUSTER] {
        std::fs::copy(again.join(f), mismatched.join(f)).unwrap();
    }
    std::fs::write(mismatched.join(identity::CERT), &rejoined.cert_pem).unwrap();
    std::fs::write(mismatched.join(identity::KEY), &before.key_pem).unwrap();
    let mut child = Command::new(agent_bin())
        .args(["run", "--node-ip", "127.0.0.1", "--network", "none"])
        .args(["--listen-metrics", "127.0.0.1:0", "--data-dir"])
        .arg(&mismatched)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("an agent with a mismatched key and certificate kept running");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("do not belong together") && stderr.contains("join"),
        "{stderr}"
    );
}
