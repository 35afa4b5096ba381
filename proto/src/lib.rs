//! Wire definitions shared by the masters and their clients.
//!
//! - [`raft`]: master-to-master RPCs (Raft messages and request forwarding).
//! - [`etcd`]: the subset of etcd's v3 gRPC API that Skiff serves, with
//!   etcd's package names and field numbers so that etcd clients work.

pub mod raft {
    tonic::include_proto!("skiff.raft");
}

pub mod etcd {
    /// `etcdserverpb`: KV, Watch, Lease, Cluster and Maintenance services.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    /// `mvccpb`: KeyValue and Event.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub use etcdserverpb::*;
}
