//! Bad input on the agent protocol, against real masters and a real
//! agent: a certificate the cluster did not sign is refused at the
//! handshake; an oversized and a malformed frame end only their own
//! stream, and before the peer is authenticated (a joiner) the size
//! allowed is far lower; a pod with a volume the node cannot mount gets a
//! status that says why. The master and the agent go on serving
//! everything else.

mod common;

use std::time::Duration;

use common::agents::{create_token, node_ready, one_at_a_time, require_images, SETTLE};
use common::{eventually, kubectl, kubectl_stdin, Cluster};
use node_agent::identity::{self, Identity};
use node_agent::session::connect;
use proto::agent::{
    agent_request, frame, AgentRequest, CaRequest, CaResponse, CertificateResponse, Hello,
    JoinRequest,
};
use serde_json::Value;

fn pod(kc: &std::path::Path, name: &str) -> Value {
    let (_, out, _) = kubectl(kc, &["get", "pod", name, "-o", "json"]);
    serde_json::from_str(&out).unwrap_or(Value::Null)
}

async fn until<F: FnMut() -> Option<T>, T>(what: &str, mut f: F) -> T {
    eventually(what, SETTLE, || std::future::ready(f())).await
}

/// TLS with a client certificate signed by nobody the cluster knows.
fn stranger_tls(ca_pem: &str) -> rustls::ClientConfig {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "system:node:intruder");
    let cert = params.self_signed(&key).unwrap();
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into();
    let mut tls = rustls::ClientConfig::builder_with_provider(identity::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(identity::roots(ca_pem).unwrap())
        .with_client_auth_cert(vec![cert.der().clone()], der)
        .unwrap();
    tls.alpn_protocols = vec![identity::ALPN.to_vec()];
    tls
}

/// Send raw bytes on a new stream; what comes back before it ends (an
/// error if the master reset it).
async fn raw_exchange(conn: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(bytes).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 20))
        .await
        .map_err(|_| "no answer in 10 s".to_string())?
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_agent_protocol_is_refused_and_serving_goes_on() {
    let _serial = one_at_a_time().await;
    require_images();
    let cluster = Cluster::start(3, &[]).await;
    let kc = cluster.kubeconfig(0);
    let join = create_token(&cluster, &[]);
    let mut n1 = cluster.join("n1", &join).unwrap();
    n1.run(&[]);
    let node = n1.name.clone();
    until("the node Ready", || {
        (node_ready(&kc, &node) == "True").then_some(())
    })
    .await;
    let id = Identity::load(&n1.dir).unwrap();
    let endpoint = connect::endpoint().unwrap();
    let gateway = join.server.clone();
    let hello = AgentRequest {
        request: Some(agent_request::Request::Hello(Hello::default())),
    };

    // A certificate from another CA: no session.
    let refused = async {
        let tls = stranger_tls(&id.ca_pem);
        let conn = connect::connect(&endpoint, &gateway, tls, Duration::from_secs(5)).await?;
        connect::request::<proto::agent::ToAgent>(&conn, hello.clone(), frame::MAX_FRAME).await
    };
    let refused = refused.await;
    assert!(refused.is_err(), "a stranger's certificate got {refused:?}");

    // A frame claiming 4 GiB, and a frame of garbage: each stream ends
    // without an answer, and the same connection still answers.
    let conn = connect::connect(
        &endpoint,
        &gateway,
        id.client_tls().unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let huge = raw_exchange(&conn, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await;
    assert!(
        !matches!(&huge, Ok(b) if !b.is_empty()),
        "an oversized frame was answered: {huge:?}"
    );
    let garbage = raw_exchange(&conn, &[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]).await;
    assert!(
        !matches!(&garbage, Ok(b) if !b.is_empty()),
        "a malformed frame was answered: {garbage:?}"
    );
    let ca_request = AgentRequest {
        request: Some(agent_request::Request::Ca(CaRequest {})),
    };
    let ca: CaResponse = connect::request(&conn, ca_request.clone(), frame::MAX_FRAME)
        .await
        .expect("the connection still answers");
    assert_eq!(ca.ca_pem.trim(), id.ca_pem.trim());

    // Without a node certificate (a joiner), a request far smaller than a
    // node may send is refused unread: a join request of 100 KiB ends its
    // stream unanswered, where one of ordinary size is answered, and the
    // same connection still answers.
    let anonymous = connect::connect(
        &endpoint,
        &gateway,
        connect::anonymous_tls(&id.ca_pem).unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let join_with = |token: String| AgentRequest {
        request: Some(agent_request::Request::Join(JoinRequest {
            token,
            node_name: "joiner".into(),
            csr_pem: String::new(),
        })),
    };
    let mut oversized = Vec::new();
    frame::write(&mut oversized, &join_with("x".repeat(100 << 10)))
        .await
        .unwrap();
    assert!(oversized.len() > frame::MAX_UNAUTHENTICATED);
    let refused = raw_exchange(&anonymous, &oversized).await;
    assert!(
        !matches!(&refused, Ok(b) if !b.is_empty()),
        "an oversized join request was answered: {refused:?}"
    );
    let answer: CertificateResponse = connect::request(
        &anonymous,
        join_with("zzzzzz.0000000000000000".into()),
        frame::MAX_UNAUTHENTICATED,
    )
    .await
    .expect("a join request of ordinary size is answered");
    assert!(answer.refused.contains("does not exist"), "{answer:?}");
    let ca: CaResponse = connect::request(&anonymous, ca_request, frame::MAX_UNAUTHENTICATED)
        .await
        .expect("the anonymous connection still answers");
    assert_eq!(ca.ca_pem.trim(), id.ca_pem.trim());

    // A volume this node cannot mount: the pod says so; a good pod beside
    // it runs.
    let pods = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: nfs}}\nspec:\n  nodeName: {node}\n  volumes: [{{name: share, nfs: {{server: 127.0.0.1, path: /exports}}}}]\n  containers: [{{name: app, image: busybox:local, command: [sleep, \"3600\"], volumeMounts: [{{name: share, mountPath: /share}}]}}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: fine}}\nspec:\n  nodeName: {node}\n  containers: [{{name: app, image: busybox:local, command: [sleep, \"3600\"]}}]\n"
    );
    let (good, _, err) = kubectl_stdin(&kc, &["apply", "-f", "-"], Some(&pods));
    assert!(good, "{err}");
    let status = until("the nfs pod's reason", || {
        let p = pod(&kc, "nfs");
        (p["status"]["reason"] == "FailedMount").then(|| p["status"].clone())
    })
    .await;
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("share") && m.contains("supports")),
        "{status}"
    );
    assert_eq!(status["phase"], "Pending", "{status}");
    until("the good pod Running", || {
        (pod(&kc, "fine")["status"]["phase"] == "Running").then_some(())
    })
    .await;
}
