//! The Maintenance service: status, alarms, defragmentation, snapshots.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use proto::etcd::maintenance_server::Maintenance;
use proto::etcd::{self as pb};
use raft_store::backup::{self, BackupError};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{errors, observe, Api};

/// What `endpoint status` shows in its VERSION column.
pub const VERSION: &str = concat!("skiff-", env!("CARGO_PKG_VERSION"));

#[tonic::async_trait]
impl Maintenance for Api {
    async fn alarm(
        &self,
        req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        observe("Alarm", async {
            let _ = req.into_inner();
            // Each master reports its own NOSPACE alarm; it clears itself when
            // space returns (see raft-store's disk guard), so deactivate is a no-op.
            let mut alarms = Vec::new();
            if self.store.space_low() {
                alarms.push(pb::AlarmMember {
                    member_id: self.store.id(),
                    alarm: pb::AlarmType::Nospace as i32,
                });
            }
            Ok(pb::AlarmResponse {
                header: Some(self.current_header()),
                alarms,
            })
        })
        .await
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        observe("Status", async {
            let s = self.store.status().map_err(errors::store)?;
            Ok(pb::StatusResponse {
                header: Some(self.header(s.revision)),
                version: VERSION.into(),
                db_size: s.db_size as i64,
                leader: s.leader.unwrap_or(0),
                raft_index: s.commit_index,
                raft_term: s.term,
                raft_applied_index: s.applied_index,
                errors: Vec::new(),
                db_size_in_use: s.db_size as i64,
                is_learner: s.is_learner,
            })
        })
        .await
    }

    async fn defragment(
        &self,
        _: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        observe("Defragment", async {
            // Rewriting every table file takes a while: off the async workers.
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.compact_disk())
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok(pb::DefragmentResponse {
                header: Some(self.current_header()),
            })
        })
        .await
    }

    async fn hash(
        &self,
        _: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        observe("Hash", async {
            Err(Status::unimplemented("skiff: Hash is not supported"))
        })
        .await
    }

    async fn hash_kv(
        &self,
        _: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        observe("HashKV", async {
            Err(Status::unimplemented("skiff: HashKV is not supported"))
        })
        .await
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

    /// A backup of this master's state machine (see `raft_store::backup`),
    /// streamed in chunks; `etcdctl snapshot save` writes them to a file.
    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        // Everything the cluster acknowledged before the request, even when
        // asked of a follower. Without a quorum this master's own state is
        // still worth saving, as etcd does.
        if let Err(e) = self.store.read_barrier().await {
            tracing::warn!("snapshot without a read barrier ({e}): it holds this master's applied state, which may miss the latest writes");
        }
        let (info, chunks) = backup::start(
            self.store.shared().clone(),
            self.store.cluster_id(),
            self.store.id(),
        )
        .await
        .map_err(backup_status)?;
        tracing::info!(revision = info.revision, "sending a snapshot");
        let header = self.header(info.revision);
        let stream = ReceiverStream::new(chunks).map(move |chunk| {
            chunk
                .map(|blob| pb::SnapshotResponse {
                    header: Some(header),
                    // Unknown until the end; etcd's clients do not read it.
                    remaining_bytes: 0,
                    blob,
                })
                .map_err(backup_status)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn move_leader(
        &self,
        _: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        observe("MoveLeader", async {
            Err(Status::unimplemented("skiff: move-leader is not supported"))
        })
        .await
    }
}

fn backup_status(e: BackupError) -> Status {
    match e {
        BackupError::Store(e) => errors::store(e),
        e => {
            tracing::error!("snapshot: {e}");
            Status::internal(format!("etcdserver: snapshot: {e}"))
        }
    }
}
