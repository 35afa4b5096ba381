//! Channels to a Skiff master's etcd API (or to etcd), with the TLS client
//! certificate etcdctl would use: `ETCDCTL_CACERT`, `ETCDCTL_CERT` and
//! `ETCDCTL_KEY`, as `deploy/dev-cluster`'s cluster.env exports them.

use std::time::Duration;

use anyhow::Context;
use raft_store::network::tls::{self, Connector};
use tonic::transport::{Channel, Endpoint};

/// The client certificate from the environment, if etcdctl's variables are set.
fn connector() -> anyhow::Result<Option<Connector>> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    match (
        var("ETCDCTL_CACERT"),
        var("ETCDCTL_CERT"),
        var("ETCDCTL_KEY"),
    ) {
        (Some(ca), Some(cert), Some(key)) => {
            let config = tls::client_config(ca.as_ref(), cert.as_ref(), key.as_ref())
                .context("the etcd client certificate (ETCDCTL_CACERT, _CERT, _KEY)")?;
            Ok(Some(Connector::new(std::sync::Arc::new(config))))
        }
        _ => Ok(None),
    }
}

/// A lazily connecting channel to `endpoint` (`host:port` or a URL; a bare
/// address is https when the client certificate is set, else http).
pub fn channel(endpoint: &str, connect_timeout: Option<Duration>) -> anyhow::Result<Channel> {
    let tls = connector()?;
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else if tls.is_some() {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    };
    let mut ep = Endpoint::from_shared(url)?.tcp_nodelay(true);
    if let Some(t) = connect_timeout {
        ep = ep.connect_timeout(t);
    }
    Ok(tls::channel(ep, tls.as_ref())?)
}
