//! The Cluster service: membership through Raft membership changes.

use proto::etcd::cluster_server::Cluster;
use proto::etcd::{self as pb};
use raft_store::MemberInfo;
use tonic::{Request, Response, Status};

use super::{errors, observe, Api};

fn member(m: MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

impl Api {
    fn member_list(&self) -> Vec<pb::Member> {
        self.store.members().into_iter().map(member).collect()
    }
}

fn valid_peer_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"));
    rest.map(|r| {
        r.parse::<std::net::SocketAddr>().is_ok()
            || r.rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    })
    .unwrap_or(false)
}

#[tonic::async_trait]
impl Cluster for Api {
    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        observe("MemberAdd", async {
            let req = req.into_inner();
            let url = match req.peer_ur_ls.as_slice() {
                [u] if valid_peer_url(u) => u.clone(),
                _ => {
                    return Err(Status::invalid_argument(
                        "etcdserver: given member URLs are invalid",
                    ))
                }
            };
            let id = self
                .store
                .add_member(url.clone(), req.is_learner)
                .await
                .map_err(errors::store)?;
            let added = pb::Member {
                id,
                name: String::new(),
                peer_ur_ls: vec![url],
                client_ur_ls: vec![],
                is_learner: req.is_learner,
            };
            Ok(pb::MemberAddResponse {
                header: Some(self.current_header()),
                member: Some(added),
                members: self.member_list(),
            })
        })
        .await
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        observe("MemberRemove", async {
            let id = req.into_inner().id;
            self.store.remove_member(id).await.map_err(errors::store)?;
            Ok(pb::MemberRemoveResponse {
                header: Some(self.current_header()),
                members: self.member_list(),
            })
        })
        .await
    }

    async fn member_update(
        &self,
        _req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        observe("MemberUpdate", async {
            Err(Status::unimplemented(
                "skiff: changing a member's peer URL is not supported; remove and add it",
            ))
        })
        .await
    }

    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        observe("MemberList", async {
            Ok(pb::MemberListResponse {
                header: Some(self.current_header()),
                members: self.member_list(),
            })
        })
        .await
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        observe("MemberPromote", async {
            let id = req.into_inner().id;
            // etcd's answers for an unknown member and for a voter; the
            // leader checks both again, and that the learner is in sync.
            match self.store.members().iter().find(|m| m.id == id) {
                None => return Err(errors::member_not_found()),
                Some(m) if !m.is_learner => return Err(errors::member_not_learner()),
                Some(_) => {}
            }
            self.store.promote_member(id).await.map_err(errors::store)?;
            Ok(pb::MemberPromoteResponse {
                header: Some(self.current_header()),
                members: self.member_list(),
            })
        })
        .await
    }
}
