//! Secrets encrypted at rest with Kubernetes' EncryptionConfiguration: the
//! store holds `k8s:enc:aesgcm:v1:<key>:` ciphertext (seen with the real
//! etcdctl) while kubectl reads the Secret as written; other resources
//! stay as they were; a new key put first seals new writes while the old
//! one still opens old ones; replacing every Secret re-encrypts it, after
//! which the old key can go; and a configuration that cannot open what is
//! stored says so.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{kubectl, kubectl_stdin, Cluster};

fn ok(r: (bool, String, String)) -> String {
    assert!(r.0, "kubectl failed: {}", r.2);
    r.1
}

fn key(b: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([b; 32])
}

fn config(providers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
    )
}

/// What the store holds at `key`, as etcdctl prints it.
fn raw(c: &Cluster, key: &str) -> String {
    let (good, out, err) = c.etcdctl(&["get", key, "--print-value-only"]);
    assert!(good, "etcdctl get {key}: {err}");
    out
}

async fn restart(c: &mut Cluster) {
    c.kill(0);
    c.spawn(0);
    c.wait_leader(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_sealed_in_the_store_and_keys_rotate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("encryption.yaml");
    let aes = format!(
        "  - aesgcm: {{keys: [{{name: key1, secret: {}}}]}}\n",
        key(1)
    );
    let sbox = format!(
        "  - secretbox: {{keys: [{{name: key2, secret: {}}}]}}\n",
        key(2)
    );
    std::fs::write(&path, config(&format!("{aes}  - identity: {{}}\n"))).unwrap();
    let path_arg = path.display().to_string();
    let mut c = Cluster::start(1, &["--encryption-provider-config", &path_arg]).await;
    let kc = c.kubeconfig(0);
    let read = |name: &str| {
        let b64 = ok(kubectl(
            &kc,
            &["get", "secret", name, "-o", "jsonpath={.data.password}"],
        ));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .expect("base64");
        String::from_utf8(bytes).expect("utf-8")
    };
    let db = "/registry/core/secrets/default/db";

    ok(kubectl(
        &kc,
        &[
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal=password=hunter2-sealed",
        ],
    ));
    let stored = raw(&c, db);
    assert!(stored.starts_with("k8s:enc:aesgcm:v1:key1:"), "{stored:?}");
    assert!(
        !stored.contains("hunter2") && !stored.contains("aHVudGVyMi1zZWFsZWQ="),
        "the value is in the clear: {stored:?}"
    );
    assert_eq!(read("db"), "hunter2-sealed");
    // Watches and lists decrypt too.
    let listed = ok(kubectl(&kc, &["get", "secrets", "-o", "name"]));
    assert!(listed.contains("secret/db"), "{listed}");
    // ConfigMaps are not named in the configuration: stored as they are.
    ok(kubectl(
        &kc,
        &["create", "configmap", "plain", "--from-literal=a=b"],
    ));
    assert!(raw(&c, "/registry/core/configmaps/default/plain").starts_with('{'));

    // Rotation: the new key first, the old one still there.
    std::fs::write(&path, config(&format!("{sbox}{aes}  - identity: {{}}\n"))).unwrap();
    restart(&mut c).await;
    assert_eq!(read("db"), "hunter2-sealed", "the old key still opens it");
    assert!(raw(&c, db).starts_with("k8s:enc:aesgcm:v1:key1:"));
    ok(kubectl(
        &kc,
        &[
            "create",
            "secret",
            "generic",
            "new",
            "--from-literal=password=fresh",
        ],
    ));
    assert!(raw(&c, "/registry/core/secrets/default/new").starts_with("k8s:enc:secretbox:v1:key2:"));
    // Re-encrypt every Secret by writing it again, as Kubernetes' docs say
    // (kubectl's client-side validation of replace needs OpenAPI v2,
    // which is not served).
    let all = ok(kubectl(&kc, &["get", "secrets", "-A", "-o", "json"]));
    ok(kubectl_stdin(
        &kc,
        &["replace", "--validate=false", "-f", "-"],
        Some(&all),
    ));
    assert!(raw(&c, db).starts_with("k8s:enc:secretbox:v1:key2:"));

    // The old key gone: everything still reads.
    std::fs::write(&path, config(&sbox)).unwrap();
    restart(&mut c).await;
    assert_eq!(read("db"), "hunter2-sealed");
    assert_eq!(read("new"), "fresh");

    // A configuration that lost the key: a clear error, and the master
    // still serves everything else.
    std::fs::write(&path, config(&aes)).unwrap();
    restart(&mut c).await;
    let (good, _, err) = kubectl(&kc, &["get", "secret", "db"]);
    assert!(!good && err.contains("does not hold"), "{err}");
    ok(kubectl(&kc, &["get", "configmap", "plain"]));

    // A file that is no EncryptionConfiguration stops the master at once.
    std::fs::write(&path, "kind: Nonsense\n").unwrap();
    c.kill(0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(c.args_mut(0).clone())
        .output()
        .expect("control-plane");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("encryption.yaml"), "{err}");
}
