//! Service account tokens for a node's pods: the kubelet's TokenRequest,
//! over the agent protocol. The node authorizer decides as it does for
//! `serviceaccounts/token` on the REST API (a pod bound to the node uses
//! the account); then the pod must exist with the uid the node names,
//! bound to this node and running under that account. The token is bound
//! to the pod and its node, so it stops working when either is deleted.

use proto::agent::{TokenRequest, TokenResponse};
use serde_json::json;

use crate::api::{Api, ApiError};
use crate::auth::{Attributes, ResourceRef};
use crate::pki::Identity;

/// Answer `request` from node `who`.
pub async fn issue(api: &Api, who: &Identity, request: TokenRequest) -> TokenResponse {
    let refused = |why: String| TokenResponse {
        refused: why,
        ..Default::default()
    };
    match token(api, who, &request).await {
        Ok((token, expiration_timestamp)) => {
            metrics::counter!("skiff_agent_tokens_issued_total").increment(1);
            TokenResponse {
                token,
                expiration_timestamp,
                refused: String::new(),
            }
        }
        Err(e) => {
            tracing::info!(
                node = ?who.node_name(),
                pod = %format!("{}/{}", request.pod_namespace, request.pod_name),
                "token refused: {}", e.message
            );
            refused(e.message)
        }
    }
}

async fn token(api: &Api, who: &Identity, r: &TokenRequest) -> Result<(String, i64), ApiError> {
    let node = who.node_name().unwrap_or_default();
    let ns = r.pod_namespace.as_str();
    let attrs = Attributes::resource(
        who,
        "create",
        ResourceRef::new("", "serviceaccounts")
            .in_namespace(Some(ns))
            .named(Some(&r.service_account))
            .subresource(Some("token")),
    );
    if let Err(why) = api
        .auth()
        .check(&attrs)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
    {
        return Err(ApiError::forbidden(why));
    }
    api.check_node_token(node, ns, &r.service_account, &r.pod_name, &r.pod_uid)
        .await?;
    let mut spec = json!({
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": r.pod_name, "uid": r.pod_uid},
    });
    if !r.audiences.is_empty() {
        spec["audiences"] = json!(r.audiences);
    }
    if r.expiration_seconds > 0 {
        spec["expirationSeconds"] = json!(r.expiration_seconds);
    }
    let answer = api
        .request_token(ns, &r.service_account, json!({ "spec": spec }))
        .await?;
    let token = answer["status"]["token"].as_str().unwrap_or("").to_string();
    let expires = answer["status"]["expirationTimestamp"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp())
        .unwrap_or(0);
    Ok((token, expires))
}
