//! Joining: a node presents a bootstrap token and a CSR for a key it made
//! itself, and gets a client certificate `system:node:<name>` from the
//! cluster CA. A connected node renews its certificate the same way,
//! authenticated by the certificate it has.
//!
//! A join registers the node: it creates the Node, and the certificate
//! names the new Node's uid ([`crate::pki::node_cert`]). A join under the
//! name of a Node that exists is refused, as kubeadm refuses one: a token
//! does not let anyone take the name (and the pods) of a node already in
//! the cluster. A renewal is refused unless the certificate it presents
//! is a member's ([`super::membership`]).

use axum::http::StatusCode;
use proto::agent::{
    CertificateResponse, ControlPlaneRequest, ControlPlaneResponse, JoinRequest, RenewRequest,
};
use serde_json::json;

use super::membership::{Membership, Verdict};
use super::{masters, Gateway};
use crate::api::{ApiQuery, Resource};
use crate::tokens::{self, Refusal, Token};

fn nodes() -> &'static Resource {
    crate::api::find_resource("", "v1", "nodes").expect("nodes are served")
}

fn exists(node: &str) -> String {
    format!(
        "a Node named {node} already exists in the cluster: a node cannot join under the name \
         of another; if that Node is this machine's and its identity is lost, delete it first \
         (kubectl delete node {node}), then join again"
    )
}

fn refused(reason: impl Into<String>) -> CertificateResponse {
    let reason = reason.into();
    tracing::info!(%reason, "join refused");
    metrics::counter!("skiff_agent_joins_total", "result" => "refused").increment(1);
    CertificateResponse {
        refused: reason,
        ..Default::default()
    }
}

fn renewal_refused(node: &str, reason: String) -> CertificateResponse {
    tracing::info!(node, %reason, "renewal refused");
    metrics::counter!("skiff_agent_renewals_refused_total").increment(1);
    CertificateResponse {
        refused: reason,
        ..Default::default()
    }
}

/// A node name must be a DNS-1123 subdomain (Kubernetes' rule for Nodes).
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

async fn token_secret(
    gateway: &Gateway,
    token: &Token,
) -> Result<Option<serde_json::Value>, String> {
    let secrets = crate::api::find_resource("", "v1", "secrets").expect("secrets are served");
    match gateway
        .api
        .get(secrets, Some(tokens::NAMESPACE), &token.secret_name())
        .await
    {
        Ok(s) => Ok(Some(s.object)),
        Err(e) if e.code == axum::http::StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(format!("reading the token: {}", e.message)),
    }
}

/// The bootstrap token `raw`, if it is one the cluster holds and it is
/// valid now; otherwise why not.
async fn valid_token(gateway: &Gateway, raw: &str) -> Result<Token, String> {
    let token = Token::parse(raw).map_err(|r| r.to_string())?;
    let secret = token_secret(gateway, &token).await?;
    tokens::check(&token, secret.as_ref(), chrono::Utc::now()).map_err(|r| match r {
        Refusal::WrongSecret(_) | Refusal::Unknown(_) => format!("invalid token: {r}"),
        other => other.to_string(),
    })?;
    Ok(token)
}

pub async fn join(gateway: &Gateway, req: JoinRequest) -> CertificateResponse {
    if !valid_node_name(&req.node_name) {
        return refused(format!(
            "node name {:?} is not a valid DNS-1123 subdomain",
            req.node_name
        ));
    }
    let token = match valid_token(gateway, &req.token).await {
        Ok(t) => t,
        Err(why) => return refused(why),
    };
    if let Err(e) = crate::pki::node_cert::check_csr(&req.csr_pem) {
        return refused(format!("{e:#}"));
    }
    let node = req.node_name.as_str();
    let uid = match register(gateway, node).await {
        Ok(uid) => uid,
        Err(why) => return refused(why),
    };
    let response = issue(gateway, node, &uid, &req.csr_pem).await;
    if response.refused.is_empty() {
        tracing::info!(node, token = %token.id, %uid, "node joined");
        metrics::counter!("skiff_agent_joins_total", "result" => "joined").increment(1);
    } else {
        // No certificate for it: the Node made for it goes.
        unregister(gateway, node, &uid).await;
    }
    response
}

/// A joining master's request for the control-plane certificates: the
/// ciphertext `init` or `certs upload` stored, for a valid bootstrap token.
/// The joiner opens it with the certificate key, which no master holds, and
/// then adds itself to the store as a learner through the etcd API with a
/// master certificate of its own; this gateway changes nothing.
pub async fn control_plane(gateway: &Gateway, req: ControlPlaneRequest) -> ControlPlaneResponse {
    let refused = |reason: String| {
        tracing::info!(%reason, "control-plane join refused");
        metrics::counter!("skiff_control_plane_certificate_fetches_total", "result" => "refused")
            .increment(1);
        ControlPlaneResponse {
            refused: reason,
            ..Default::default()
        }
    };
    let token = match valid_token(gateway, &req.token).await {
        Ok(t) => t,
        Err(why) => return refused(why),
    };
    use crate::pki::sealed;
    let secrets = crate::api::find_resource("", "v1", "secrets").expect("secrets are served");
    let uploaded = match gateway
        .api
        .get(secrets, Some(sealed::SECRET_NAMESPACE), sealed::SECRET_NAME)
        .await
    {
        Ok(s) => s.object,
        Err(e) if e.code == StatusCode::NOT_FOUND => {
            return refused(
                "no control-plane certificates are uploaded: run `control-plane certs upload` \
                 on a master and join with the certificate key it prints"
                    .into(),
            )
        }
        Err(e) => return refused(format!("reading the uploaded certificates: {}", e.message)),
    };
    let sealed = match sealed::from_secret(&uploaded, chrono::Utc::now()) {
        Ok(s) => s,
        Err(why) => return refused(why),
    };
    let store = gateway.api.registry().store();
    tracing::info!(token = %token.id, "control-plane certificates handed to a joining master");
    metrics::counter!("skiff_control_plane_certificate_fetches_total", "result" => "handed")
        .increment(1);
    ControlPlaneResponse {
        sealed,
        client_urls: store
            .members()
            .into_iter()
            .filter(|m| !m.is_learner)
            .flat_map(|m| m.client_urls)
            .collect(),
        cluster_token: store.config().cluster_token.clone(),
        refused: String::new(),
    }
}

/// Create the Node for a joining node; its uid. Refused if one exists.
async fn register(gateway: &Gateway, node: &str) -> Result<String, String> {
    let api = &gateway.api;
    match api.get(nodes(), None, node).await {
        Ok(_) => return Err(exists(node)),
        Err(e) if e.code == StatusCode::NOT_FOUND => {}
        Err(e) => return Err(format!("reading Node {node}: {}", e.message)),
    }
    let object = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node,
            "labels": {"kubernetes.io/hostname": node},
        },
    });
    match api.create(nodes(), None, object, &ApiQuery::new()).await {
        Ok(created) => created["metadata"]["uid"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("Node {node} was created without a uid")),
        // Another join took the name first.
        Err(e) if e.code == StatusCode::CONFLICT => Err(exists(node)),
        Err(e) => Err(format!("creating Node {node}: {}", e.message)),
    }
}

async fn unregister(gateway: &Gateway, node: &str, uid: &str) {
    let opts = json!({"preconditions": {"uid": uid}});
    if let Err(e) = gateway
        .api
        .delete(nodes(), None, node, &opts, &ApiQuery::new())
        .await
    {
        tracing::warn!(node, "the Node of a refused join stays: {}", e.message);
    }
}

pub async fn renew(
    gateway: &Gateway,
    membership: &Membership,
    node: &str,
    cert_uid: Option<&str>,
    req: RenewRequest,
) -> CertificateResponse {
    let uid = match membership.check(node, cert_uid).await {
        Verdict::Member(uid) => uid,
        Verdict::NotMember(why) => return renewal_refused(node, why),
        Verdict::CannotCheck(why) => {
            return renewal_refused(
                node,
                format!("this master cannot check the node's membership now: {why}"),
            )
        }
    };
    match gateway.ca.sign_node_bound(
        &req.csr_pem,
        node,
        &uid,
        gateway.settings.node_cert_validity,
    ) {
        Ok(cert) => {
            tracing::info!(node, "node certificate renewed");
            metrics::counter!("skiff_agent_renewals_total").increment(1);
            issued(gateway, cert).await
        }
        Err(e) => renewal_refused(node, format!("{e:#}")),
    }
}

async fn issue(gateway: &Gateway, node: &str, uid: &str, csr_pem: &str) -> CertificateResponse {
    match gateway
        .ca
        .sign_node_bound(csr_pem, node, uid, gateway.settings.node_cert_validity)
    {
        Ok(cert) => issued(gateway, cert).await,
        Err(e) => refused(format!("{e:#}")),
    }
}

async fn issued(gateway: &Gateway, cert: String) -> CertificateResponse {
    CertificateResponse {
        certificate_pem: cert,
        ca_pem: gateway.ca.pem().to_string(),
        masters: masters::list(&gateway.api).await,
        refused: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_dns_subdomains() {
        for good in ["n1", "node-a.example", "a"] {
            assert!(valid_node_name(good), "{good}");
        }
        for bad in ["", "N1", "-a", "a-", "a..b", "a_b", &"x".repeat(64)] {
            assert!(!valid_node_name(bad), "{bad}");
        }
    }
}
