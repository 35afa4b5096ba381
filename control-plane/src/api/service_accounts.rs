//! Service account tokens through the API: the cluster's signing key (made
//! once by whichever master needs it first, kept in the store outside the
//! Kubernetes tree, so only the masters and `system:masters` read it), the
//! TokenRequest API (`serviceaccounts/<name>/token`, `kubectl create
//! token`), and authentication with the tokens it issued: a token works
//! while its service account, and the pod, secret or node it is bound to,
//! exist with the uids it names.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::resources::find;
use super::status::{ApiError, ApiResult};
use super::Api;
use crate::auth::rbac::service_account_user;
use crate::auth::service_account::{Claims, KubernetesClaims, Ref, Signer, ISSUER};
use crate::pki::Identity;
use crate::registry::RegistryError;

/// Where the signing key lives in the store.
const KEY: &str = "/skiff/serviceaccount-signing-key";
/// A token lasts an hour unless asked otherwise, and at least ten minutes.
const DEFAULT_EXPIRATION: i64 = 3600;
const MIN_EXPIRATION: i64 = 600;
const MAX_EXPIRATION: i64 = 1 << 32;

pub type SignerCell = Arc<tokio::sync::OnceCell<Signer>>;

impl Api {
    /// The signing key, read from the store (or made and stored, once).
    async fn signer(&self) -> ApiResult<&Signer> {
        self.signer
            .get_or_try_init(|| async {
                let unavailable =
                    |e: String| ApiError::unavailable(format!("the service account key: {e}"));
                for _ in 0..3 {
                    match self.registry.get(KEY).await {
                        Ok(s) => {
                            let der = s.object["pkcs8"]
                                .as_str()
                                .and_then(|b| B64.decode(b).ok())
                                .ok_or_else(|| unavailable("stored undecodable".into()))?;
                            return Signer::from_pkcs8(&der).map_err(unavailable);
                        }
                        Err(RegistryError::NotFound) => {
                            let der = Signer::generate().map_err(unavailable)?;
                            let stored = json!({"pkcs8": B64.encode(&der)});
                            match self
                                .registry
                                .create(KEY, &stored, &Default::default())
                                .await
                            {
                                Ok(_) => {
                                    tracing::info!("made the service account signing key");
                                    return Signer::from_pkcs8(&der).map_err(unavailable);
                                }
                                // Another master made it first: read it.
                                Err(RegistryError::AlreadyExists) => continue,
                                Err(e) => return Err(unavailable(e.to_string())),
                            }
                        }
                        Err(e) => return Err(unavailable(e.to_string())),
                    }
                }
                Err(unavailable("could not be read or made".into()))
            })
            .await
    }

    /// The core object `plural`/`name`, if it exists.
    pub(super) async fn find_core(
        &self,
        plural: &str,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Option<Value>> {
        let r = find("", "v1", plural).expect("a core resource");
        match self.get(r, ns, name).await {
            Ok(s) => Ok(Some(s.object)),
            Err(e) if e.reason == "NotFound" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// NodeRestriction for tokens: a node may have a token only for a pod
    /// bound to it (`pod` with uid `uid`), under the account that pod
    /// runs as; the token is then bound to the pod.
    pub async fn check_node_token(
        &self,
        node: &str,
        ns: &str,
        account: &str,
        pod: &str,
        uid: &str,
    ) -> ApiResult<()> {
        let found = self.find_core("pods", Some(ns), pod).await?;
        let runs_as = |p: &Value| {
            p.pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_string()
        };
        let allowed = found.as_ref().is_some_and(|p| {
            p.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid)
                && !uid.is_empty()
                && p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
                && runs_as(p) == account
        });
        if allowed {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "node '{node}' may have a token of service account {ns}/{account} only bound to a \
             pod on it that runs as that account (boundObjectRef kind Pod, with its uid); \
             pod {ns}/{pod} (uid {uid:?}) is not one"
        )))
    }

    /// Answer a TokenRequest for service account `ns/name`.
    pub async fn request_token(&self, ns: &str, name: &str, body: Value) -> ApiResult<Value> {
        let sa_resource = find("", "v1", "serviceaccounts").expect("served");
        let sa = self.get(sa_resource, Some(ns), name).await?.object;
        let spec = &body["spec"];
        let expiration = match &spec["expirationSeconds"] {
            Value::Null => DEFAULT_EXPIRATION,
            v => v
                .as_i64()
                .ok_or_else(|| ApiError::bad_request("spec.expirationSeconds must be a number"))?,
        };
        if expiration < MIN_EXPIRATION {
            return Err(ApiError::bad_request(
                "spec.expirationSeconds: may not specify a duration less than 10 minutes",
            ));
        }
        if expiration > MAX_EXPIRATION {
            return Err(ApiError::bad_request(
                "spec.expirationSeconds: may not specify a duration larger than 2^32 seconds",
            ));
        }
        let audiences: Vec<String> = match spec["audiences"].as_array() {
            Some(a) if !a.is_empty() => a
                .iter()
                .map(|v| v.as_str().map(String::from))
                .collect::<Option<_>>()
                .ok_or_else(|| ApiError::bad_request("spec.audiences must be strings"))?,
            _ => vec![ISSUER.to_string()],
        };
        let mut claims = KubernetesClaims {
            namespace: ns.to_string(),
            serviceaccount: Ref {
                name: name.to_string(),
                uid: uid(&sa),
            },
            pod: None,
            node: None,
            secret: None,
        };
        let bound = &spec["boundObjectRef"];
        if bound.is_object() {
            let kind = bound["kind"].as_str().unwrap_or("");
            let bound_name = bound["name"].as_str().unwrap_or("");
            let (plural, ns_of) = match kind {
                "Pod" => ("pods", Some(ns)),
                "Secret" => ("secrets", Some(ns)),
                "Node" => ("nodes", None),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "spec.boundObjectRef.kind: Unsupported value: {other:?}: supported values: \"Pod\", \"Node\", \"Secret\""
                    )))
                }
            };
            let object = self
                .find_core(plural, ns_of, bound_name)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(find("", "v1", plural).expect("served"), bound_name)
                })?;
            let found = Ref {
                name: bound_name.to_string(),
                uid: uid(&object),
            };
            if bound["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty() && u != found.uid)
            {
                return Err(ApiError::bad_request(format!(
                    "the UID in the bound object reference ({}) does not match the UID in record ({})",
                    bound["uid"].as_str().unwrap_or(""),
                    found.uid
                )));
            }
            match kind {
                "Pod" => {
                    if let Some(node) = object["spec"]["nodeName"].as_str() {
                        if let Some(n) = self.find_core("nodes", None, node).await? {
                            claims.node = Some(Ref {
                                name: node.to_string(),
                                uid: uid(&n),
                            });
                        }
                    }
                    claims.pod = Some(found);
                }
                "Secret" => claims.secret = Some(found),
                _ => claims.node = Some(found),
            }
        }
        let now = Utc::now();
        let exp = now.timestamp() + expiration;
        let token = self
            .signer()
            .await?
            .sign(&Claims {
                iss: ISSUER.to_string(),
                sub: service_account_user(ns, name),
                aud: audiences.clone(),
                exp,
                iat: now.timestamp(),
                nbf: now.timestamp(),
                jti: super::objects::uid(),
                kubernetes: claims,
            })
            .map_err(ApiError::internal)?;
        let expires = DateTime::<Utc>::from_timestamp(exp, 0).unwrap_or(now);
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns,
                "creationTimestamp": now.to_rfc3339_opts(SecondsFormat::Secs, true)},
            "spec": {"audiences": audiences, "expirationSeconds": expiration,
                "boundObjectRef": if bound.is_object() { bound.clone() } else { Value::Null }},
            "status": {"token": token,
                "expirationTimestamp": expires.to_rfc3339_opts(SecondsFormat::Secs, true)},
        }))
    }

    /// Who a bearer token speaks for: one from the static token file, else
    /// a service account's JWT; 401 with the reason otherwise.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Identity, ApiError> {
        match self.tokens.get(token) {
            Some(who) => Ok(who.clone()),
            None if is_jwt(token) => self.authenticate_service_account(token).await,
            None => Err(ApiError::unauthorized()),
        }
    }

    /// Who a service account token speaks for, or why it does not work.
    async fn authenticate_service_account(&self, token: &str) -> Result<Identity, ApiError> {
        let signer = self.signer().await?;
        let claims = signer
            .verify(token, Utc::now().timestamp(), ISSUER)
            .map_err(|e| ApiError::unauthorized_because(format!("invalid bearer token: {e}")))?;
        let k = &claims.kubernetes;
        let gone =
            |what: String| ApiError::unauthorized_because(format!("invalid bearer token: {what}"));
        let same = |o: Option<Value>, r: &Ref| o.is_some_and(|o| uid(&o) == r.uid);
        let sa = self
            .find_core(
                "serviceaccounts",
                Some(&k.namespace),
                &k.serviceaccount.name,
            )
            .await?;
        if !same(sa, &k.serviceaccount) {
            return Err(gone(format!(
                "service account {}/{} has been deleted",
                k.namespace, k.serviceaccount.name
            )));
        }
        if let Some(pod) = &k.pod {
            if !same(
                self.find_core("pods", Some(&k.namespace), &pod.name)
                    .await?,
                pod,
            ) {
                return Err(gone(format!(
                    "pod {}/{} has been deleted",
                    k.namespace, pod.name
                )));
            }
        } else if let Some(secret) = &k.secret {
            if !same(
                self.find_core("secrets", Some(&k.namespace), &secret.name)
                    .await?,
                secret,
            ) {
                return Err(gone(format!(
                    "secret {}/{} has been deleted",
                    k.namespace, secret.name
                )));
            }
        } else if let Some(node) = &k.node {
            if !same(self.find_core("nodes", None, &node.name).await?, node) {
                return Err(gone(format!("node {} has been deleted", node.name)));
            }
        }
        Ok(Identity {
            user: claims.sub,
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", k.namespace),
            ],
        })
    }

    /// The key set that verifies the tokens (`/openid/v1/jwks`).
    pub async fn jwks(&self) -> ApiResult<Value> {
        Ok(self.signer().await?.jwks())
    }
}

/// An object's `metadata.uid` ("" if it has none).
fn uid(o: &Value) -> String {
    o["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

/// Whether a bearer token looks like a JWT (three dot-separated parts).
fn is_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}
