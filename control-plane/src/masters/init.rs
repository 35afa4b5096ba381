//! `control-plane init`: after the first master of a new cluster serves,
//! make what the others need to join, and say how: a bootstrap token (for
//! masters and nodes alike), the control-plane certificates sealed under a
//! fresh certificate key, and the two join commands, as `kubeadm init
//! --upload-certs` prints them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::rest_client::RestClient;
use crate::tokens::Token;

/// Where the first master is reached, for the join commands.
pub struct Joining {
    pub kubeconfig: PathBuf,
    pub pki_dir: PathBuf,
    /// The agent port's address (host:port), where masters and nodes join.
    pub agent_server: String,
}

/// A bootstrap token valid for `ttl` (None: forever), stored through the API.
pub async fn create_token(
    client: &RestClient,
    ttl: Option<Duration>,
    description: &str,
) -> Result<Token> {
    let expires = ttl
        .map(|d| chrono::Duration::from_std(d).map(|d| chrono::Utc::now() + d))
        .transpose()
        .context("the token's lifetime is too long")?;
    let token = Token::generate();
    let secrets = format!("/api/v1/namespaces/{}/secrets", crate::tokens::NAMESPACE);
    client
        .post(&secrets, &token.to_secret(expires, description))
        .await
        .context("creating the token")?;
    Ok(token)
}

/// Wait until this master's API answers, then make the token and the sealed
/// certificates and print the join commands.
pub async fn announce(joining: Joining) -> Result<()> {
    let client = RestClient::from_kubeconfig(&joining.kubeconfig)?;
    let started = Instant::now();
    loop {
        match client
            .get(&format!("/api/v1/namespaces/{}", crate::tokens::NAMESPACE))
            .await
        {
            Ok(_) => break,
            Err(e) if started.elapsed() > Duration::from_secs(60) => {
                bail!("the API did not answer within 60 s: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let token = create_token(
        &client,
        Some(Duration::from_secs(24 * 3600)),
        "made by control-plane init",
    )
    .await?;
    let key = crate::pki::sealed::upload(&client, &joining.pki_dir).await?;
    let hash = crate::pki::ca_hash(&client.ca_pem)?;
    println!("{}", message(&joining, &token, &hash, &key.to_string()));
    Ok(())
}

fn message(j: &Joining, token: &Token, hash: &str, key: &str) -> String {
    let server = &j.agent_server;
    format!(
        "Your Skiff control plane is serving.\n\
         \n\
         To use the cluster:\n\
         \n  export KUBECONFIG={kubeconfig}\n\
         \n\
         To add a master, run on it (with its own --name and addresses; the\n\
         certificate key opens the uploaded certificates for two hours, and\n\
         `control-plane certs upload` makes a new one):\n\
         \n  control-plane join {server} --token {token} \\\n    \
         --discovery-token-ca-cert-hash {hash} \\\n    \
         --control-plane --certificate-key {key} \\\n    \
         --name <name> --pki-dir <dir> --data-dir <dir> ...\n\
         \n\
         To add a node, run on it:\n\
         \n  node-agent join --server {server} --token {token} \\\n    \
         --discovery-token-ca-cert-hash {hash} --node-name <name>\n\
         \n\
         The token is valid for 24 hours (`control-plane token create` makes others).",
        kubeconfig = j.kubeconfig.display(),
    )
}
