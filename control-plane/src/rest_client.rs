//! A small client of the Kubernetes API for the command line
//! (`control-plane token ...`): the server, CA and client certificate come
//! from a kubeconfig, as kubectl reads them.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::Value;

pub struct RestClient {
    http: reqwest::Client,
    server: String,
    /// The cluster CA (PEM), as the kubeconfig gives it.
    pub ca_pem: String,
}

fn field(doc: &serde_yaml::Value, path: &[&str]) -> Result<String> {
    let mut v = doc;
    for p in path {
        v = &v[*p];
    }
    v.as_str()
        .map(str::to_string)
        .with_context(|| format!("the kubeconfig has no {}", path.join(".")))
}

impl RestClient {
    /// A client for the current context of the kubeconfig at `path`.
    pub fn from_kubeconfig(path: &Path) -> Result<RestClient> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&text).context("the kubeconfig is not YAML")?;
        let current = field(&doc, &["current-context"])?;
        let named = |list: &str, name: &str| -> Result<serde_yaml::Value> {
            doc[list]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|e| e["name"].as_str() == Some(name))
                .cloned()
                .with_context(|| format!("the kubeconfig has no {list} entry {name:?}"))
        };
        let context = named("contexts", &current)?;
        let cluster = named("clusters", &field(&context, &["context", "cluster"])?)?;
        let user = named("users", &field(&context, &["context", "user"])?)?;
        let b64 = |s: String| -> Result<Vec<u8>> {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .context("kubeconfig data is not base64")
        };
        let ca = b64(field(&cluster, &["cluster", "certificate-authority-data"])?)?;
        let mut identity = b64(field(&user, &["user", "client-certificate-data"])?)?;
        identity.extend(b64(field(&user, &["user", "client-key-data"])?)?);
        let server = field(&cluster, &["cluster", "server"])?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .identity(reqwest::Identity::from_pem(&identity)?)
            .timeout(Duration::from_secs(15))
            .build()?;
        Ok(RestClient {
            http,
            server: server.trim_end_matches('/').to_string(),
            ca_pem: String::from_utf8(ca).context("the CA is not PEM text")?,
        })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let resp = req.send().await.context("the API server did not answer")?;
        let code = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !code.is_success() {
            bail!(
                "{} ({})",
                body["message"].as_str().unwrap_or("request failed"),
                code
            );
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.server)))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.server)).json(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.send(self.http.delete(format!("{}{path}", self.server)))
            .await
    }
}
