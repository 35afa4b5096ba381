//! Who may do what, with the real kubectl: a user with no role is refused
//! with Kubernetes' message; bound to `view` in one namespace they read
//! there and nowhere else, and write nothing; `kubectl auth can-i` (and
//! `--list`) and `auth whoami` answer for them; impersonation needs the
//! right to impersonate; no one grants a permission they do not hold;
//! service account tokens work while their account and bound pod exist;
//! and a refused request is refused before its body is read.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, kubectl, kubectl_stdin, Cluster};

const WITHIN: Duration = Duration::from_secs(15);

fn ok(r: (bool, String, String)) -> String {
    assert!(r.0, "kubectl failed: {}", r.2);
    r.1
}

fn refused(r: (bool, String, String)) -> String {
    assert!(
        !r.0,
        "kubectl succeeded where it should be refused: {}",
        r.1
    );
    r.2
}

/// A kubeconfig that presents a bearer token (and no certificate).
fn token_kubeconfig(cluster: &Cluster, name: &str, token: &str) -> std::path::PathBuf {
    let path = cluster.dir.path().join(format!("kubeconfig-token-{name}"));
    let ca = cluster.pki().join("ca.crt");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: token-user\n  user:\n    token: {token}\ncontexts:\n- name: ctx\n  context:\n    cluster: skiff\n    user: token-user\ncurrent-context: ctx\n",
        cluster.api_url(0),
        ca.display()
    );
    std::fs::write(&path, text).expect("writing kubeconfig");
    path
}

/// Wait until `kc` may do what `args` asks (a binding just made reaches
/// every master's cache within moments).
async fn until_allowed(kc: &Path, args: &[&str]) -> String {
    eventually(
        &format!("kubectl {args:?} to be allowed"),
        WITHIN,
        || async {
            let (good, out, _) = kubectl(kc, args);
            good.then_some(out)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_bindings_reviews_and_impersonation() {
    let cluster = Cluster::start(1, &[]).await;
    let admin = cluster.kubeconfig(0);
    let bob = cluster.kubeconfig_as("bob", &[]);

    // The bootstrap roles are there.
    let roles = ok(kubectl(&admin, &["get", "clusterroles", "-o", "name"]));
    for r in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:node",
    ] {
        assert!(
            roles.contains(&format!("clusterrole.rbac.authorization.k8s.io/{r}\n")),
            "{r}: {roles}"
        );
    }

    // `/` lists what is served, for those allowed to read it.
    let root: serde_json::Value =
        serde_json::from_str(&ok(kubectl(&admin, &["get", "--raw", "/"]))).expect("JSON");
    for p in ["/api/v1", "/apis/rbac.authorization.k8s.io/v1", "/version"] {
        assert!(
            root["paths"]
                .as_array()
                .is_some_and(|a| a.contains(&p.into())),
            "{p}: {root}"
        );
    }
    let err = refused(kubectl(&bob, &["get", "--raw", "/"]));
    assert!(err.contains("cannot get path \"/\""), "{err}");

    // No role: refused, in Kubernetes' words.
    ok(kubectl(&admin, &["create", "namespace", "team-a"]));
    ok(kubectl(&admin, &["create", "namespace", "team-b"]));
    ok(kubectl(
        &admin,
        &[
            "-n",
            "team-a",
            "create",
            "configmap",
            "c",
            "--from-literal=k=v",
        ],
    ));
    ok(kubectl(
        &admin,
        &[
            "-n",
            "team-a",
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=k=v",
        ],
    ));
    let err = refused(kubectl(&bob, &["-n", "team-a", "get", "pods"]));
    assert!(
        err.contains("pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"team-a\""),
        "{err}"
    );
    let err = refused(kubectl(&bob, &["create", "namespace", "bobs"]));
    assert!(
        err.contains("User \"bob\" cannot create resource \"namespaces\" in API group \"\" at the cluster scope"),
        "{err}"
    );
    // Discovery and whoami need no role.
    let who = ok(kubectl(&bob, &["auth", "whoami", "-o", "json"]));
    let who: serde_json::Value = serde_json::from_str(&who).expect("SelfSubjectReview");
    assert_eq!(who["status"]["userInfo"]["username"], "bob");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!(["system:authenticated"])
    );

    // Bound to view in team-a.
    ok(kubectl(
        &admin,
        &[
            "-n",
            "team-a",
            "create",
            "rolebinding",
            "bob-views",
            "--clusterrole=view",
            "--user=bob",
        ],
    ));
    until_allowed(&bob, &["-n", "team-a", "get", "configmaps"]).await;
    ok(kubectl(&bob, &["-n", "team-a", "get", "configmap", "c"]));
    refused(kubectl(&bob, &["-n", "team-b", "get", "configmaps"]));
    refused(kubectl(&bob, &["-n", "team-a", "get", "secret", "s"]));
    let err = refused(kubectl(&bob, &["-n", "team-a", "delete", "configmap", "c"]));
    assert!(
        err.contains(
            "configmaps \"c\" is forbidden: User \"bob\" cannot delete resource \"configmaps\""
        ),
        "{err}"
    );
    ok(kubectl(&admin, &["-n", "team-a", "get", "configmap", "c"]));

    // can-i, for oneself and (by an admin) for another.
    assert_eq!(
        ok(kubectl(
            &bob,
            &["auth", "can-i", "list", "pods", "-n", "team-a"]
        ))
        .trim(),
        "yes"
    );
    let (good, out, _) = kubectl(&bob, &["auth", "can-i", "delete", "pods", "-n", "team-a"]);
    assert!(!good && out.trim() == "no", "{out}");
    let (good, out, _) = kubectl(&bob, &["auth", "can-i", "get", "secrets", "-n", "team-a"]);
    assert!(!good && out.trim() == "no", "{out}");
    assert_eq!(
        ok(kubectl(
            &admin,
            &[
                "auth",
                "can-i",
                "watch",
                "deployments.apps",
                "-n",
                "team-a",
                "--as",
                "bob"
            ]
        ))
        .trim(),
        "yes"
    );
    let list = ok(kubectl(&bob, &["auth", "can-i", "--list", "-n", "team-a"]));
    let pods = list
        .lines()
        .find(|l| l.starts_with("pods "))
        .unwrap_or_else(|| panic!("no pods line: {list}"));
    assert!(pods.contains("[get list watch]"), "{list}");
    assert!(!list.lines().any(|l| l.starts_with("secrets ")), "{list}");

    // Impersonation: an admin may; bob may not.
    refused(kubectl(
        &admin,
        &["-n", "team-b", "get", "configmaps", "--as", "bob"],
    ));
    ok(kubectl(
        &admin,
        &["-n", "team-a", "get", "configmaps", "--as", "bob"],
    ));
    let err = refused(kubectl(
        &bob,
        &["-n", "team-a", "get", "pods", "--as", "alice"],
    ));
    assert!(
        err.contains("users \"alice\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{err}"
    );
    refused(kubectl(
        &bob,
        &["get", "pods", "--as", "x", "--as-group", "system:masters"],
    ));

    // Escalation: admin of team-a, bob writes roles with what he holds and
    // nothing more.
    ok(kubectl(
        &admin,
        &[
            "-n",
            "team-a",
            "create",
            "rolebinding",
            "bob-admin",
            "--clusterrole=admin",
            "--user=bob",
        ],
    ));
    until_allowed(&bob, &["-n", "team-a", "get", "secrets"]).await;
    ok(kubectl(
        &bob,
        &[
            "-n",
            "team-a",
            "create",
            "role",
            "cm-reader",
            "--verb=get,list",
            "--resource=configmaps",
        ],
    ));
    let err = refused(kubectl(
        &bob,
        &[
            "-n",
            "team-a",
            "create",
            "role",
            "node-reader",
            "--verb=list",
            "--resource=nodes",
        ],
    ));
    assert!(
        err.contains("is attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    let err = refused(kubectl(
        &bob,
        &[
            "-n",
            "team-a",
            "create",
            "rolebinding",
            "grab",
            "--clusterrole=cluster-admin",
            "--user=bob",
        ],
    ));
    assert!(
        err.contains("is attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    ok(kubectl(
        &bob,
        &[
            "-n",
            "team-a",
            "create",
            "rolebinding",
            "carol-reads",
            "--role=cm-reader",
            "--user=carol",
        ],
    ));
    refused(kubectl(
        &bob,
        &[
            "-n",
            "team-b",
            "create",
            "role",
            "r",
            "--verb=get",
            "--resource=pods",
        ],
    ));
    // A binding's role is fixed.
    let err = refused(kubectl(
        &admin,
        &[
            "-n",
            "team-a",
            "patch",
            "rolebinding",
            "carol-reads",
            "--type=merge",
            "-p",
            r#"{"roleRef":{"name":"other"}}"#,
        ],
    ));
    assert!(err.contains("cannot change roleRef"), "{err}");

    // Cluster-wide grants.
    let carol = cluster.kubeconfig_as("carol", &["auditors"]);
    refused(kubectl(&carol, &["get", "nodes"]));
    ok(kubectl(
        &admin,
        &[
            "create",
            "clusterrole",
            "node-reader",
            "--verb=get,list,watch",
            "--resource=nodes",
        ],
    ));
    ok(kubectl(
        &admin,
        &[
            "create",
            "clusterrolebinding",
            "auditors-read-nodes",
            "--clusterrole=node-reader",
            "--group=auditors",
        ],
    ));
    until_allowed(&carol, &["get", "nodes"]).await;
    ok(kubectl(&carol, &["-n", "team-a", "get", "configmap", "c"]));
    refused(kubectl(&carol, &["-n", "team-b", "get", "configmaps"]));
    ok(kubectl(
        &admin,
        &["delete", "clusterrolebinding", "auditors-read-nodes"],
    ));
    eventually("carol's grant to be gone", WITHIN, || async {
        (!kubectl(&carol, &["get", "nodes"]).0).then_some(())
    })
    .await;

    // Service accounts: a default one in every namespace; tokens from the
    // TokenRequest API work while the account (and the pod a token is
    // bound to) exist.
    eventually("team-a's default service account", WITHIN, || async {
        kubectl(&admin, &["-n", "team-a", "get", "sa", "default"])
            .0
            .then_some(())
    })
    .await;
    ok(kubectl(&admin, &["-n", "team-a", "create", "sa", "ci"]));
    ok(kubectl(
        &admin,
        &[
            "-n",
            "team-a",
            "create",
            "rolebinding",
            "ci-views",
            "--clusterrole=view",
            "--serviceaccount=team-a:ci",
        ],
    ));
    let token = ok(kubectl(&admin, &["-n", "team-a", "create", "token", "ci"]));
    let ci = token_kubeconfig(&cluster, "ci", token.trim());
    until_allowed(&ci, &["-n", "team-a", "get", "configmaps"]).await;
    let err = refused(kubectl(&ci, &["-n", "team-b", "get", "configmaps"]));
    assert!(
        err.contains("User \"system:serviceaccount:team-a:ci\" cannot list"),
        "{err}"
    );
    let who: serde_json::Value =
        serde_json::from_str(&ok(kubectl(&ci, &["auth", "whoami", "-o", "json"]))).expect("JSON");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:team-a",
            "system:authenticated"
        ])
    );
    let jwks = ok(kubectl(&ci, &["get", "--raw", "/openid/v1/jwks"]));
    assert!(jwks.contains("\"crv\":\"P-256\""), "{jwks}");
    let err = refused(kubectl(
        &admin,
        &["-n", "team-a", "create", "token", "ci", "--duration=1m"],
    ));
    assert!(err.contains("less than 10 minutes"), "{err}");
    // Bound to a pod: refused once the pod is gone.
    ok(kubectl(
        &admin,
        &[
            "-n",
            "team-a",
            "run",
            "p",
            "--image=busybox:local",
            "--",
            "sleep",
            "60",
        ],
    ));
    let bound = ok(kubectl(
        &admin,
        &[
            "-n",
            "team-a",
            "create",
            "token",
            "ci",
            "--bound-object-kind=Pod",
            "--bound-object-name=p",
        ],
    ));
    let ci_pod = token_kubeconfig(&cluster, "ci-pod", bound.trim());
    ok(kubectl(&ci_pod, &["-n", "team-a", "get", "pods"]));
    ok(kubectl(
        &admin,
        &[
            "-n",
            "team-a",
            "delete",
            "pod",
            "p",
            "--grace-period=0",
            "--force",
        ],
    ));
    eventually("the pod-bound token to be refused", WITHIN, || async {
        let (good, _, err) = kubectl(&ci_pod, &["-n", "team-a", "get", "pods"]);
        (!good && err.contains("pod team-a/p has been deleted")).then_some(())
    })
    .await;
    // A token of a deleted account: 401 (a forged one: auth::service_account).
    ok(kubectl(&ci, &["-n", "team-a", "get", "configmaps"]));
    ok(kubectl(&admin, &["-n", "team-a", "delete", "sa", "ci"]));
    let err = refused(kubectl(&ci, &["-n", "team-a", "get", "configmaps"]));
    assert!(
        err.contains("service account team-a/ci has been deleted"),
        "{err}"
    );

    // A refused request is refused before its body is read: 403 for a
    // body over the 3 MiB limit, not 413.
    let big = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"k\":\"{}\"}}}}",
        "x".repeat(4 << 20)
    );
    let err = refused(kubectl_stdin(
        &bob,
        &["-n", "team-b", "create", "-f", "-"],
        Some(&big),
    ));
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
    let err = refused(kubectl_stdin(
        &bob,
        &["-n", "team-a", "create", "-f", "-"],
        Some(&big),
    ));
    assert!(
        err.contains("RequestEntityTooLarge") || err.contains("too large"),
        "{err}"
    );
}
