//! The etcd v3 gRPC API on every master, backed by the embedded store.
//!
//! One file per etcd service: [`kv`], [`watch`], [`lease`], [`cluster`],
//! [`maintenance`]; [`convert`] maps wire types to store types and
//! [`errors`] maps store errors to etcd's gRPC statuses.

pub mod cluster;
pub mod convert;
pub mod errors;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use proto::etcd::cluster_server::ClusterServer;
use proto::etcd::kv_server::KvServer;
use proto::etcd::lease_server::LeaseServer;
use proto::etcd::maintenance_server::MaintenanceServer;
use proto::etcd::watch_server::WatchServer;
use proto::etcd::ResponseHeader;
use raft_store::Store;
use tonic::Status;

/// etcd's `--max-request-bytes` default: larger writes are refused.
pub const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024 / 2;
/// Messages above this are refused as ResourceExhausted, as etcd's gRPC
/// server does (it allows 512 KiB of headroom over the request limit).
pub const MAX_GRPC_BYTES: usize = MAX_REQUEST_BYTES + 512 * 1024;
/// What the transport decodes at all; between [`MAX_GRPC_BYTES`] and this,
/// the handlers answer with etcd's status.
const MAX_DECODE_BYTES: usize = 8 << 20;

/// What every service needs: the store and how to stamp a response header.
#[derive(Clone)]
pub struct Api {
    pub store: Arc<Store>,
    /// Turns true when the master stops: open watch streams end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl Api {
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.store.cluster_id(),
            member_id: self.store.id(),
            revision,
            raft_term: self.store.term(),
        }
    }

    pub fn current_header(&self) -> ResponseHeader {
        self.header(self.store.revision())
    }
}

/// Count and time one unary call by method and gRPC code.
pub async fn observe<T>(
    method: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<tonic::Response<T>, Status> {
    let started = Instant::now();
    let result = call.await;
    let code = match &result {
        Ok(_) => "OK".to_string(),
        Err(s) => format!("{:?}", s.code()),
    };
    metrics::counter!("skiff_grpc_requests_total", "method" => method, "code" => code).increment(1);
    metrics::histogram!("skiff_grpc_request_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    result.map(tonic::Response::new)
}

/// Serve the etcd API on `listener` until `stop` turns true: over mutual
/// TLS with `tls` (etcd's `--client-cert-auth`), else plaintext. Requests
/// in flight then are finished; watch streams are ended with etcd's
/// "server stopped", so that their clients move to another master at once
/// rather than hold this one's exit up.
pub async fn serve(
    store: Arc<Store>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let shutdown = {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    // A member that knows it was removed answers every request alike.
    let removed = store.removed();
    let refuse_if_removed = move |req: tonic::Request<()>| {
        if *removed.borrow() {
            Err(errors::removed())
        } else {
            Ok(req)
        }
    };
    let api = Api {
        store,
        stopping: stop,
    };
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .layer(tonic::service::interceptor(refuse_if_removed))
        .add_service(KvServer::new(api.clone()).max_decoding_message_size(MAX_DECODE_BYTES))
        .add_service(WatchServer::new(api.clone()).max_decoding_message_size(MAX_DECODE_BYTES))
        .add_service(LeaseServer::new(api.clone()).max_decoding_message_size(MAX_DECODE_BYTES))
        .add_service(ClusterServer::new(api.clone()).max_decoding_message_size(MAX_DECODE_BYTES))
        .add_service(MaintenanceServer::new(api).max_decoding_message_size(MAX_DECODE_BYTES));
    match tls {
        Some(tls) => {
            let incoming = raft_store::network::tls::incoming(listener, tls, "client");
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?
        }
        None => {
            // Nagle's algorithm would hold small replies back for tens of milliseconds.
            let incoming =
                tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?
        }
    }
    Ok(())
}
