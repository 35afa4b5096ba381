//! Joining: a node presents a bootstrap token and a CSR for a key it made
//! itself, and gets a client certificate `system:node:<name>` from the
//! cluster CA. A connected node renews its certificate the same way,
//! authenticated by the certificate it has.

use proto::agent::{CertificateResponse, JoinRequest, RenewRequest};

use super::{masters, Gateway};
use crate::tokens::{self, Refusal, Token};

fn refused(reason: impl Into<String>) -> CertificateResponse {
    let reason = reason.into();
    tracing::info!(%reason, "join refused");
    metrics::counter!("skiff_agent_joins_total", "result" => "refused").increment(1);
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

pub async fn join(gateway: &Gateway, req: JoinRequest) -> CertificateResponse {
    if !valid_node_name(&req.node_name) {
        return refused(format!(
            "node name {:?} is not a valid DNS-1123 subdomain",
            req.node_name
        ));
    }
    let token = match Token::parse(&req.token) {
        Ok(t) => t,
        Err(r) => return refused(r.to_string()),
    };
    let secret = match token_secret(gateway, &token).await {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    if let Err(r) = tokens::check(&token, secret.as_ref(), chrono::Utc::now()) {
        return refused(match r {
            Refusal::WrongSecret(_) | Refusal::Unknown(_) => format!("invalid token: {r}"),
            other => other.to_string(),
        });
    }
    let response = issue(gateway, &req.node_name, &req.csr_pem).await;
    if response.refused.is_empty() {
        tracing::info!(node = %req.node_name, token = %token.id, "node joined");
        metrics::counter!("skiff_agent_joins_total", "result" => "joined").increment(1);
    }
    response
}

pub async fn renew(gateway: &Gateway, node: &str, req: RenewRequest) -> CertificateResponse {
    let response = issue(gateway, node, &req.csr_pem).await;
    if response.refused.is_empty() {
        tracing::info!(node, "node certificate renewed");
        metrics::counter!("skiff_agent_renewals_total").increment(1);
    }
    response
}

async fn issue(gateway: &Gateway, node: &str, csr_pem: &str) -> CertificateResponse {
    match gateway
        .ca
        .sign_node(csr_pem, node, gateway.settings.node_cert_validity)
    {
        Ok(cert) => CertificateResponse {
            certificate_pem: cert,
            ca_pem: gateway.ca.pem().to_string(),
            masters: masters::list(&gateway.api).await,
            refused: String::new(),
        },
        Err(e) => refused(format!("{e:#}")),
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
