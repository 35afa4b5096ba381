//! Kubernetes' ServiceAccount admission for new pods: a pod runs under
//! `default` unless it names an account, and the account must exist (the
//! `default` one alone may still be on its way in a namespace just made:
//! the node waits for it). Unless the pod or its account says
//! `automountServiceAccountToken: false`, the pod gets a projected volume
//! `kube-api-access-<random>` holding a token for the account, the
//! cluster's CA certificate (ConfigMap `kube-root-ca.crt`) and its
//! namespace, mounted read-only at [`MOUNT_PATH`] in every container that
//! mounts nothing there itself; this is where in-cluster clients look.

use rand::Rng;
use serde_json::{json, Value};

use super::status::{ApiError, ApiResult};
use super::Api;

pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The ConfigMap every namespace has, holding the cluster CA as `ca.crt`.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// What the kubelet asks for (an hour and seven seconds, as Kubernetes).
const TOKEN_EXPIRATION: i64 = 3607;
/// The letters of generated names (no vowels, no look-alikes).
const NAME_LETTERS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

impl Api {
    /// Set the pod's service account and mount its token (see the module).
    pub(super) async fn admit_pod_service_account(
        &self,
        ns: &str,
        pod: &mut Value,
    ) -> ApiResult<()> {
        let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) else {
            return Ok(());
        };
        let account = spec["serviceAccountName"]
            .as_str()
            .or_else(|| spec["serviceAccount"].as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        spec["serviceAccountName"] = json!(account);
        spec["serviceAccount"] = json!(account);
        let pod_says = spec["automountServiceAccountToken"].as_bool();
        let found = self
            .find_core("serviceaccounts", Some(ns), &account)
            .await?;
        let account_says = match &found {
            Some(sa) => sa["automountServiceAccountToken"].as_bool(),
            None if account == "default" => None,
            None => {
                let name = pod
                    .pointer("/metadata/name")
                    .or_else(|| pod.pointer("/metadata/generateName"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                return Err(ApiError::forbidden(format!(
                    "pods \"{name}\" is forbidden: error looking up service account {ns}/{account}: \
                     serviceaccount \"{account}\" not found"
                )));
            }
        };
        if pod_says.or(account_says) != Some(false) {
            mount_token(spec);
        }
        Ok(())
    }
}

/// Add the projected volume and mount it in every container.
fn mount_token(spec: &mut Value) {
    let mut rng = rand::thread_rng();
    let suffix: String = (0..5)
        .map(|_| NAME_LETTERS[rng.gen_range(0..NAME_LETTERS.len())] as char)
        .collect();
    let volume = format!("kube-api-access-{suffix}");
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            let has_own = c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"].as_str() == Some(MOUNT_PATH));
            if has_own || !c.is_object() {
                continue;
            }
            if !c["volumeMounts"].is_array() {
                c["volumeMounts"] = json!([]);
            }
            if let Some(mounts) = c["volumeMounts"].as_array_mut() {
                mounts.push(json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH}));
                mounted = true;
            }
        }
    }
    if !mounted {
        return;
    }
    if !spec["volumes"].is_array() {
        spec["volumes"] = json!([]);
    }
    if let Some(volumes) = spec["volumes"].as_array_mut() {
        volumes.push(json!({
            "name": volume,
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
                    {"configMap": {"name": ROOT_CA_CONFIGMAP,
                        "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ],
            },
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_mounts_the_token_unless_it_mounts_something_there() {
        let mut spec = json!({
            "initContainers": [{"name": "init"}],
            "containers": [
                {"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "own", "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        });
        mount_token(&mut spec);
        let volume = spec["volumes"][1]["name"].as_str().unwrap().to_string();
        assert!(volume.starts_with("kube-api-access-") && volume.len() == 21);
        assert_eq!(
            spec["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"]["path"],
            "token"
        );
        assert_eq!(spec["initContainers"][0]["volumeMounts"][0]["name"], volume);
        assert_eq!(spec["containers"][0]["volumeMounts"][1]["name"], volume);
        assert_eq!(spec["containers"][0]["volumeMounts"][1]["readOnly"], true);
        assert_eq!(
            spec["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "a container with its own mount there keeps it"
        );
    }
}
